"""The Chatbot on a real (tiny) checkpoint: sessions, memory, odd input, decodings, eval, bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import chat_latency
from dialoglab.chat.bot import EMPTY_PROMPT, Chatbot, clean_text
from dialoglab.experiment.evaluate import evaluate
from dialoglab.generation import DecodingConfig


@pytest.fixture(scope="module")
def bot(chat_checkpoint: Path) -> Chatbot:
    return Chatbot.from_checkpoint(chat_checkpoint, decoding="greedy")


pytestmark = pytest.mark.usefixtures("one_thread")


class Spy:
    """Records the contexts and decodings the model is asked to reply to."""

    def __init__(self, bot: Chatbot, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict] = []
        model = bot.model
        original = model.reply

        def reply(contexts, personas=None, decoding=None, max_source_length=100):
            self.calls.append(
                {
                    "contexts": [list(c) for c in contexts],
                    "personas": personas,
                    "decoding": decoding,
                }
            )
            return original(contexts, personas, decoding, max_source_length)

        monkeypatch.setattr(model, "reply", reply)


def test_from_checkpoint_reads_the_models_settings(bot: Chatbot, chat_checkpoint: Path) -> None:
    info = bot.describe()
    assert info["family"] == "seq2seq" and info["context_turns"] == 2
    assert info["ckpt_path"] == str(chat_checkpoint)
    assert bot.decoding.effective_strategy == "greedy"
    assert bot.window == 2 and bot.supports_attention and not bot.uses_persona
    assert bot.message_budget() == 19  # data.max_length 20, minus <eos>


@pytest.mark.parametrize("decoding", ["greedy", "beam", "sample", "nucleus", {"strategy": "beam"}])
def test_every_decoding_replies(chat_checkpoint: Path, decoding) -> None:
    bot = Chatbot.from_checkpoint(chat_checkpoint, decoding=decoding)
    reply = bot.reply("hello, how are you?")
    assert reply.source == "model" and reply.text.strip()
    assert len(reply.text.split()) <= 20


def test_history_is_the_models_context_window(bot: Chatbot, monkeypatch) -> None:
    spy = Spy(bot, monkeypatch)
    session = bot.new_session("s1")
    first = bot.reply("hello there", session)
    second = bot.reply("how are you?", session)
    bot.reply("tell me more", session)
    assert [c["contexts"][0] for c in spy.calls] == [
        ["hello there"],
        [first.text, "how are you?"],  # context_turns=2: the last two turns
        [second.text, "tell me more"],
    ]
    assert len(session.history) == 6
    assert bot.reply("/reset", session).source == "command"
    assert session.history == []


def test_memory_answers_without_the_model(bot: Chatbot, monkeypatch) -> None:
    spy = Spy(bot, monkeypatch)
    session = bot.new_session()
    told = bot.reply("hi, my name is Ana and I love jazz", session)
    assert told.source == "model" and told.learnt == {"name": "Ana", "likes": ["jazz"]}
    assert len(spy.calls) == 1
    assert spy.calls[0]["personas"] is None  # a chatterbot seq2seq model reads no persona
    for question, answer in [
        ("what's my name?", "Your name is Ana."),
        ("What do I like?", "You told me you like jazz."),
        ("where am I from?", "You haven't told me where you're from yet."),
    ]:
        reply = bot.reply(question, session)
        assert (reply.source, reply.text) == ("memory", answer)
    assert len(spy.calls) == 1
    assert "Ana" in bot.reply("/memory", session).text
    bot.reply("/forget", session)
    assert session.memory.is_empty()
    assert bot.reply("/forget shoe size", session).text.startswith("nothing called")
    assert "/reset" in bot.reply("/help", session).text
    assert bot.reply("/nonsense", session).text.startswith("Unknown command")


def test_persona_models_get_memory_as_persona_lines(bot: Chatbot, monkeypatch) -> None:
    spy = Spy(bot, monkeypatch)
    monkeypatch.setattr(bot, "uses_persona", True)  # as for GPT-2
    session = bot.new_session()
    bot.reply("my name is Ana. I'm from Lisbon", session)
    bot.reply("how are you?", session)
    assert spy.calls[-1]["personas"] == [["my name is ana.", "i am from lisbon."]]


def test_empty_input_is_not_sent_to_the_model(bot: Chatbot, monkeypatch) -> None:
    spy = Spy(bot, monkeypatch)
    session = bot.new_session()
    for text in ["", "   ", "\n\t ", "\x00\x01"]:
        reply = bot.reply(text, session)
        assert (reply.source, reply.text) == ("system", EMPTY_PROMPT)
    assert spy.calls == [] and session.history == []


def test_unknown_words_become_unk(bot: Chatbot) -> None:
    reply = bot.reply("zxqv blorptastic hello")
    assert reply.source == "model"
    assert reply.unknown_words == ["zxqv", "blorptastic"]


def test_long_input_is_cut_with_a_notice(bot: Chatbot, monkeypatch) -> None:
    spy = Spy(bot, monkeypatch)
    words = " ".join(f"word{i}" for i in range(60))
    reply = bot.reply(words)
    assert reply.source == "model"
    assert any("reads only the last 19" in n for n in reply.notices)
    huge = "hello " * 10_000
    reply = bot.reply(huge)
    assert any(f"{len(huge.strip()):,} characters" in n for n in reply.notices)
    assert len(spy.calls[-1]["contexts"][0][-1]) <= bot.max_input_chars


def test_non_utf8_and_odd_text_are_handled(bot: Chatbot) -> None:
    assert clean_text(b"caf\xe9 ok") == "caf\ufffd ok"
    assert clean_text("a\udcff b") == "a? b"
    assert clean_text("\x1b[31mred\x1b[0m") == "[31mred [0m"
    assert bot.reply(b"hello \xff\xfe there").source == "model"
    assert bot.reply("emoji 😀 and ñandú and 中文").source == "model"


def test_attention_of_a_reply(bot: Chatbot) -> None:
    reply = bot.reply("how are you?", with_attention=True, decoding="beam")
    attention = reply.attention
    assert attention is not None
    assert attention.source_tokens == ["how", "are", "you", "?", "<eos>"]
    assert len(attention.weights) == len(attention.reply_tokens) >= 1
    for row in attention.weights:
        assert len(row) == 5 and sum(row) == pytest.approx(1.0, abs=1e-4)
    assert reply.text == bot.reply("how are you?", decoding="beam").text


def test_seeded_sampling_replies_are_reproducible(bot: Chatbot) -> None:
    sample = DecodingConfig.from_any("sample", seed=7, temperature=1.5)
    replies = {bot.reply("how are you?", decoding=sample).text for _ in range(3)}
    assert len(replies) == 1


def _evaluate_with(make_cfg, ckpt: Path, out: Path, override: str) -> tuple[dict, dict]:
    """eval.py on one test batch with one more override -> (metrics, the saved metrics.json)."""
    cfg = make_cfg(
        "eval",
        [f"ckpt_path={ckpt}", "trainer.limit_test_batches=1", override],
        output_dir=out,
    )
    metrics = evaluate(cfg)
    return metrics, json.loads((out / "metrics.json").read_text())


def test_eval_reports_bleu_and_distinct_under_a_decoding(
    make_cfg, chat_checkpoint: Path, tmp_path: Path
) -> None:
    results = {}
    for decoding in ("greedy", "beam"):
        metrics, saved = _evaluate_with(
            make_cfg, chat_checkpoint, tmp_path / decoding, f"decoding={decoding}"
        )
        for name in ("test/bleu", "test/distinct_1", "test/distinct_2", "test/ppl"):
            assert name in metrics
        assert saved["decoding"]["strategy"] == decoding
        results[decoding] = (metrics, [s["reply"] for s in saved["samples"]])
    # Likelihood does not depend on decoding; the generated replies do.
    assert results["greedy"][0]["test/ppl"] == pytest.approx(results["beam"][0]["test/ppl"])
    assert results["greedy"][1] != results["beam"][1]


@pytest.mark.parametrize("quantize", ["auto", "none", "int8", "bf16"])
def test_from_checkpoint_with_quantized_weights(chat_checkpoint: Path, quantize: str) -> None:
    bot = Chatbot.from_checkpoint(chat_checkpoint, decoding="beam", quantize=quantize)
    assert bot.weights == ("int8" if quantize == "auto" else quantize)
    assert bot.describe()["quantize"] == bot.weights
    reply = bot.reply("hello, how are you?", with_attention=True)
    assert reply.source == "model" and reply.text.strip()
    assert reply.attention is not None and reply.attention.weights


def test_eval_with_int8_weights(make_cfg, chat_checkpoint: Path, tmp_path: Path) -> None:
    ppl = {}
    for quantize in ("none", "int8"):
        metrics, saved = _evaluate_with(
            make_cfg, chat_checkpoint, tmp_path / quantize, f"quantize={quantize}"
        )
        ppl[quantize] = metrics["test/ppl"]
        assert saved["quantize"] == quantize
    assert ppl["int8"] == pytest.approx(ppl["none"], rel=0.05)


def test_chat_latency_benchmark(chat_checkpoint: Path) -> None:
    saved = chat_latency.report(chat_checkpoint, repeats=1)
    assert saved["quantize"] == "int8"  # as chat's default (auto) holds a gru_attn model
    for name in ("greedy", "beam5"):
        stats = saved["results"][name]
        assert stats["n"] == len(chat_latency.PROMPTS)
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    assert saved["decodings"]["beam5"]["num_beams"] == 5
    # int8 replies compared with the fp32 model's, prompt by prompt
    assert set(saved["same_reply_as_fp32"]) == {"greedy", "beam5"}
    assert all(0.0 <= share <= 1.0 for share in saved["same_reply_as_fp32"].values())
    figures = chat_latency.run(quick=True, ckpt_path=str(chat_checkpoint))
    assert [f.name for f in figures] == [
        "chat reply p50 (greedy)",
        "chat reply p95 (greedy)",
        "chat reply p50 (beam5)",
        "chat reply p95 (beam5)",
        "chat replies equal to fp32 (greedy)",
        "chat replies equal to fp32 (beam5)",
    ]


def test_chat_latency_fp32_has_no_agreement_row(chat_checkpoint: Path) -> None:
    report = chat_latency.report(chat_checkpoint, repeats=1, warmup=0, quantize="none")
    assert report["quantize"] == "none" and "same_reply_as_fp32" not in report
