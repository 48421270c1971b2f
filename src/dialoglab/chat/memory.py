"""What the bot remembers about the user: rule-based extraction of facts, and answers about them.

Facts are read from what the user says with a few regular expressions, clause by clause:

- name: "my name is Ana", "call me Ana", "I'm called Ana", "name's Ana"
- likes: "I like / love / enjoy / adore / really like jazz", "I'm into jazz", "my favorite X is Y"
- dislikes: "I hate / dislike / don't like / do not like / can't stand / detest jazz"
- origin: "I'm from Lisbon", "I am from ...", "I come from ...", "I was born in ..."

A new like removes the same thing from the dislikes and vice versa. Questions ("what's my name?",
"what do I like?", "what do I hate?", "where am I from?", "what do you know about me?",
"do I like jazz?") are answered from memory, so the model is not asked. For models conditioned on
personas (GPT-2), `as_persona_lines()` states the facts as persona lines ("my name is ana.").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_ITEMS = 20  # per list: the oldest is dropped beyond this
MAX_VALUE_CHARS = 60

_WORD = r"[^\W\d_][\w'\-]*"
# Clauses: split at sentence ends, semicolons, commas before "but", and "but"/"and I"/"and my".
_CLAUSE_SPLIT = re.compile(
    r"[.!?;\n]+|,?\s+but\s+|,?\s+(?=and\s+(?:i|my)\b)|,\s*(?=(?:i|my)\b)", re.I
)
_LEADING_AND = re.compile(
    r"^\s*(?:(?:and|also|so|well|oh|yeah|yes|actually|now|ok|okay|but|though|honestly)\b[\s,]*)+",
    re.I,
)

# The fact patterns, each anchored at the start of a clause (after optional fillers).
_NAME = re.compile(
    rf"^(?:hi|hello|hey)?[\s,!]*(?:my\s+name\s+is|my\s+name's|name's|call\s+me|"
    rf"i\s+am\s+called|i'm\s+called|you\s+can\s+call\s+me|people\s+call\s+me)\s+"
    rf"(?P<value>{_WORD}(?:\s+{_WORD})?)",
    re.I,
)
_DISLIKE = re.compile(
    r"^i\s+(?:really\s+|just\s+|absolutely\s+)?"
    r"(?:hate|dislike|detest|despise|loathe|don't\s+like|do\s+not\s+like|don't\s+love|"
    r"can't\s+stand|cannot\s+stand|can\s+not\s+stand)\s+(?P<value>.+)$",
    re.I,
)
_LIKE = re.compile(
    r"^i\s+(?:really\s+|also\s+|just\s+|do\s+|absolutely\s+)?"
    r"(?:like|love|enjoy|adore)\s+(?P<value>.+)$"
    r"|^i(?:'m|\s+am)\s+(?:really\s+)?into\s+(?P<value2>.+)$"
    r"|^my\s+(?:favou?rite|fave)\s+\w+(?:\s+\w+)?\s+is\s+(?P<value3>.+)$",
    re.I,
)
_ORIGIN = re.compile(
    r"^(?:i'm|i\s+am|i\s+come|i\s+came|i'm\s+originally|i\s+am\s+originally)\s+from\s+(?P<value>.+)$"
    r"|^i\s+was\s+born\s+in\s+(?P<value2>.+)$",
    re.I,
)

# Questions about the user (matched on the whole message, lower-cased).
_Q_NAME = re.compile(
    r"\b(?:what(?:'s|\s+is)\s+my\s+name|do\s+you\s+(?:know|remember)\s+my\s+name|who\s+am\s+i)\b"
)
_Q_LIKES = re.compile(
    r"\b(?:what\s+do\s+i\s+(?:like|love|enjoy)|what\s+(?:are|were)\s+my\s+(?:likes|interests|"
    r"hobbies|favou?rite\s+things))\b"
)
_Q_DISLIKES = re.compile(
    r"\b(?:what\s+do\s+i\s+(?:hate|dislike|not\s+like|detest)|what\s+don't\s+i\s+like|"
    r"what\s+(?:are|were)\s+my\s+dislikes)\b"
)
_Q_ORIGIN = re.compile(
    r"\b(?:where\s+(?:am|was)\s+i\s+(?:from|born)|where\s+do\s+i\s+come\s+from|"
    r"where\s+did\s+i\s+say\s+i(?:'m|\s+am)\s+from)\b"
)
_Q_ALL = re.compile(
    r"\b(?:what\s+do\s+you\s+(?:know|remember)\s+about\s+me|what\s+have\s+i\s+told\s+you)\b"
)
_Q_DO_I_LIKE = re.compile(r"^\s*do\s+i\s+(?:like|love|enjoy)\s+(?P<value>.+?)\s*\??\s*$", re.I)

_STOP_VALUES = {"it", "that", "this", "them", "you", "to", "a", "the", "so", "too", "very"}
_NOT_NAMES = {"not", "a", "an", "the", "so", "very", "just", "going", "fine", "here", "tired"}


@dataclass
class Memory:
    """Facts about one user: name, likes, dislikes, origin (plain data, JSON-friendly)."""

    name: str | None = None
    likes: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    origin: str | None = None

    # -- reading facts -------------------------------------------------------------------------
    def observe(self, text: str) -> dict[str, Any]:
        """Remember the facts stated in `text`; returns what was learnt ({} when nothing)."""
        learnt: dict[str, Any] = {}
        for clause in _clauses(text):
            if clause.endswith("?") or _is_question(clause):
                continue
            if m := _NAME.match(clause):
                name = _clean_name(m.group("value"))
                if name:
                    self.name = learnt["name"] = name
                continue
            if m := _DISLIKE.match(clause):
                for item in _items(m.group("value")):
                    self._add(self.dislikes, self.likes, item)
                    learnt.setdefault("dislikes", []).append(item)
                continue
            if m := _LIKE.match(clause):
                value = m.group("value") or m.group("value2") or m.group("value3")
                for item in _items(value):
                    self._add(self.likes, self.dislikes, item)
                    learnt.setdefault("likes", []).append(item)
                continue
            if m := _ORIGIN.match(clause):
                origin = _clean_place(m.group("value") or m.group("value2"))
                if origin:
                    self.origin = learnt["origin"] = origin
        return learnt

    @staticmethod
    def _add(target: list[str], opposite: list[str], item: str) -> None:
        if item in opposite:
            opposite.remove(item)
        if item in target:
            target.remove(item)
        target.append(item)
        del target[:-MAX_ITEMS]

    # -- answering -----------------------------------------------------------------------------
    def answer(self, text: str) -> str | None:
        """A reply from memory when `text` asks about the user; None when it does not."""
        question = " ".join(text.lower().replace("\u2019", "'").split())
        if m := _Q_DO_I_LIKE.match(question):
            item = _items(m.group("value"))
            if item:
                thing = item[0]
                if thing in self.likes:
                    return f"Yes, you told me you like {thing}."
                if thing in self.dislikes:
                    return f"No, you told me you don't like {thing}."
                return f"I don't know whether you like {thing}. Tell me!"
        if _Q_ALL.search(question):
            return self.summary()
        if _Q_NAME.search(question):
            if self.name:
                return f"Your name is {self.name}."
            return 'I don\'t know your name yet. Tell me with "my name is ...".'
        if _Q_DISLIKES.search(question):
            if self.dislikes:
                return f"You told me you don't like {_join(self.dislikes)}."
            return "You haven't told me anything you dislike yet."
        if _Q_LIKES.search(question):
            if self.likes:
                return f"You told me you like {_join(self.likes)}."
            return 'You haven\'t told me what you like yet. Tell me with "I like ...".'
        if _Q_ORIGIN.search(question):
            if self.origin:
                return f"You're from {self.origin}."
            return "You haven't told me where you're from yet."
        return None

    def summary(self) -> str:
        """Everything remembered, as one sentence a user can read."""
        if self.is_empty():
            return "I don't know anything about you yet."
        parts = []
        if self.name:
            parts.append(f"your name is {self.name}")
        if self.origin:
            parts.append(f"you're from {self.origin}")
        if self.likes:
            parts.append(f"you like {_join(self.likes)}")
        if self.dislikes:
            parts.append(f"you don't like {_join(self.dislikes)}")
        text = "; ".join(parts)
        return f"I remember that {text}."

    # -- state ---------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        return not (self.name or self.likes or self.dislikes or self.origin)

    def forget(self, key: str | None = None) -> None:
        """Forget everything, or one of name, likes, dislikes, origin."""
        if key in (None, "", "all"):
            self.name, self.origin = None, None
            self.likes.clear()
            self.dislikes.clear()
            return
        if key not in ("name", "likes", "dislikes", "origin"):
            raise ValueError(f"nothing called {key!r} to forget: name, likes, dislikes or origin")
        if key in ("likes", "dislikes"):
            getattr(self, key).clear()
        else:
            setattr(self, key, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "likes": list(self.likes),
            "dislikes": list(self.dislikes),
            "origin": self.origin,
        }

    def as_persona_lines(self) -> list[str]:
        """The facts as persona lines in the style of PersonaChat ("i like jazz.")."""
        lines = []
        if self.name:
            lines.append(f"my name is {self.name.lower()}.")
        if self.origin:
            lines.append(f"i am from {self.origin.lower()}.")
        lines.extend(f"i like {item}." for item in self.likes)
        lines.extend(f"i don't like {item}." for item in self.dislikes)
        return lines


# -----------------------------------------------------------------------------
# Helpers


def _clauses(text: str) -> list[str]:
    text = text.replace("\u2019", "'").replace("`", "'")
    clauses = []
    for raw in _CLAUSE_SPLIT.split(text):
        clause = _LEADING_AND.sub("", " ".join(raw.split()))
        if clause:
            clauses.append(clause)
    # A trailing "?" is cut by the splitter; remember which clauses were questions.
    if text.rstrip().endswith("?") and clauses:
        clauses[-1] += "?"
    return clauses


def _is_question(clause: str) -> bool:
    return bool(
        re.match(r"^(?:do|does|did|what|who|where|why|how|are|is|can|could)\b", clause, re.I)
    )


def _items(value: str) -> list[str]:
    """'jazz, rock and old films too' -> ['jazz', 'rock', 'old films']."""
    value = re.sub(
        r"\s+(?:too|as\s+well|a\s+lot|very\s+much|so\s+much|a\s+bit)\s*$", "", value, flags=re.I
    )
    items = []
    for piece in re.split(r",\s*(?:and\s+)?|\s+and\s+|\s+or\s+|\s*&\s*", value):
        item = " ".join(re.sub(r"[^\w'\- ]", " ", piece).split()).lower()
        item = re.sub(r"^to\s+", "", item)  # "i like to dance" -> "dance"
        if item and item not in _STOP_VALUES and len(item) <= MAX_VALUE_CHARS:
            items.append(item)
    return items


def _clean_name(value: str) -> str | None:
    words = value.split()
    while words and words[-1].lower() in ("and", "but", "i", "so", "please", "thanks", "now"):
        words.pop()
    if not words or words[0].lower() in _NOT_NAMES:
        return None
    return " ".join(w[:1].upper() + w[1:] for w in words)[:MAX_VALUE_CHARS]


def _clean_place(value: str) -> str | None:
    value = re.sub(r"\s+(?:originally|actually)\s*$", "", value.strip(" .,!"), flags=re.I)
    words = value.split()
    if not words or len(value) > MAX_VALUE_CHARS:
        return None
    keep_lower = {"of", "the", "and", "de", "da", "do", "del", "la", "le"}
    return " ".join(
        w if (i and w.lower() in keep_lower) else w[:1].upper() + w[1:] for i, w in enumerate(words)
    )


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
