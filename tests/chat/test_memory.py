"""Memory of the user: what is extracted from messages, and how questions are answered."""

from __future__ import annotations

import pytest

from dialoglab.chat.memory import Memory

# (message, what is learnt from it)
EXTRACTION = [
    ("my name is Ana", {"name": "Ana"}),
    ("Hi, my name is ana.", {"name": "Ana"}),
    ("hello! My name's Jean-Luc", {"name": "Jean-Luc"}),
    ("call me Bob please", {"name": "Bob"}),
    ("You can call me Maria José", {"name": "Maria José"}),
    ("I'm called Li", {"name": "Li"}),
    ("I like jazz", {"likes": ["jazz"]}),
    ("I love old films", {"likes": ["old films"]}),
    ("i really enjoy hiking.", {"likes": ["hiking"]}),
    ("I like jazz, rock and pizza too", {"likes": ["jazz", "rock", "pizza"]}),
    ("I like to dance", {"likes": ["dance"]}),
    ("I'm into chess", {"likes": ["chess"]}),
    ("my favorite food is sushi", {"likes": ["sushi"]}),
    ("I hate mondays", {"dislikes": ["mondays"]}),
    ("I don't like spiders", {"dislikes": ["spiders"]}),
    ("I do not like green eggs", {"dislikes": ["green eggs"]}),
    ("I can't stand noise", {"dislikes": ["noise"]}),
    ("I don\u2019t like rain", {"dislikes": ["rain"]}),
    ("I'm from Lisbon", {"origin": "Lisbon"}),
    ("I am from new york.", {"origin": "New York"}),
    ("I come from Rio de Janeiro", {"origin": "Rio de Janeiro"}),
    ("I was born in Porto", {"origin": "Porto"}),
    (
        "my name is Ana and I love jazz but I hate rap",
        {"name": "Ana", "likes": ["jazz"], "dislikes": ["rap"]},
    ),
    ("I like tea. I'm from Kyoto", {"likes": ["tea"], "origin": "Kyoto"}),
    # Not facts about the user.
    ("I'd like a coffee", {}),
    ("I would like to know", {}),
    ("do I like pizza?", {}),
    ("what's my name?", {}),
    ("I'm tired", {}),
    ("I am not sure", {}),
    ("do you like jazz?", {}),
    ("hello there", {}),
    ("", {}),
]


@pytest.mark.parametrize(("message", "learnt"), EXTRACTION)
def test_extraction(message: str, learnt: dict) -> None:
    memory = Memory()
    assert memory.observe(message) == learnt
    for key, value in learnt.items():
        assert getattr(memory, key) == value


# (facts told first, question, expected answer or None when the model should reply)
ANSWERS = [
    ([], "what's my name?", "I don't know your name yet"),
    (["my name is Ana"], "what's my name?", "Your name is Ana."),
    (["my name is Ana"], "What is my name", "Your name is Ana."),
    (["my name is Ana"], "do you know my name?", "Your name is Ana."),
    (["my name is Ana"], "who am I?", "Your name is Ana."),
    (["my name is Ana", "call me Bea"], "what's my name?", "Your name is Bea."),
    ([], "what do I like?", "You haven't told me what you like yet"),
    (["I like jazz", "I love tea"], "What do I like?", "You told me you like jazz and tea."),
    (["I like jazz, rock and tea"], "what do i like", "You told me you like jazz, rock and tea."),
    (["I hate rain"], "what do I hate?", "You told me you don't like rain."),
    (["I hate rain"], "what don't I like?", "You told me you don't like rain."),
    ([], "what do I dislike?", "You haven't told me anything you dislike yet."),
    (["I'm from Lisbon"], "where am I from?", "You're from Lisbon."),
    (["I'm from Lisbon"], "Where do I come from?", "You're from Lisbon."),
    ([], "where am i from", "You haven't told me where you're from yet."),
    (["I like jazz"], "do I like jazz?", "Yes, you told me you like jazz."),
    (["I hate jazz"], "do I like jazz?", "No, you told me you don't like jazz."),
    ([], "do I like jazz?", "I don't know whether you like jazz."),
    (
        ["my name is Ana", "I'm from Lisbon", "I like jazz", "I hate rain"],
        "what do you know about me?",
        "I remember that your name is Ana; you're from Lisbon; you like jazz; you don't like rain.",
    ),
    ([], "what do you remember about me", "I don't know anything about you yet."),
    # Not about the user: the model replies.
    (["my name is Ana"], "what is your name?", None),
    (["I like jazz"], "do you like jazz?", None),
    ([], "hello", None),
]


@pytest.mark.parametrize(("facts", "question", "expected"), ANSWERS)
def test_answers(facts: list[str], question: str, expected: str | None) -> None:
    memory = Memory()
    for fact in facts:
        memory.observe(fact)
    answer = memory.answer(question)
    if expected is None:
        assert answer is None
    else:
        assert answer is not None and answer.startswith(expected), answer


def test_likes_and_dislikes_exclude_each_other() -> None:
    memory = Memory()
    memory.observe("I like jazz and rock")
    memory.observe("I hate jazz")
    assert memory.likes == ["rock"] and memory.dislikes == ["jazz"]
    memory.observe("actually I love jazz")
    assert memory.likes == ["rock", "jazz"] and memory.dislikes == []


def test_forget_everything_or_one_thing() -> None:
    memory = Memory()
    memory.observe("my name is Ana and I like jazz but I hate rain. I'm from Lisbon")
    memory.forget("likes")
    assert memory.likes == [] and memory.name == "Ana"
    memory.forget("name")
    assert memory.name is None and memory.origin == "Lisbon"
    memory.forget()
    assert memory.is_empty() and memory.to_dict() == {
        "name": None,
        "likes": [],
        "dislikes": [],
        "origin": None,
    }
    with pytest.raises(ValueError, match="name, likes, dislikes or origin"):
        memory.forget("age")


def test_persona_lines() -> None:
    memory = Memory()
    assert memory.as_persona_lines() == []
    memory.observe("my name is Ana. I'm from Lisbon. I like jazz and I hate rain")
    assert memory.as_persona_lines() == [
        "my name is ana.",
        "i am from lisbon.",
        "i like jazz.",
        "i don't like rain.",
    ]


def test_lists_are_bounded_and_values_short() -> None:
    memory = Memory()
    for i in range(50):
        memory.observe(f"I like thing{i}")
    assert len(memory.likes) == 20 and memory.likes[-1] == "thing49"
    assert memory.observe("I like " + "x" * 500) == {}
