"""HFTokenizer: BPE fitting, special tokens, the causal-LM layout, truncation, packing, state."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from dialoglab.data.corpora.persona_jsonl import PersonaJsonlReader
from dialoglab.data.dialogue import Example, split_by_group
from dialoglab.data.hf_tokenization import IGNORE_INDEX, HFTokenizer, first_fit_decreasing
from dialoglab.errors import ConfigError
from tests.helpers.synthetic_persona import write_persona_jsonl

TEXTS = [
    "hello there, how are you today?",
    "i am fine, thanks for asking.",
    "what do you like to do on weekends?",
    "i like hiking in the mountains and reading books.",
    "a sailor who loves the sea.",
    "that sounds wonderful, tell me more.",
]
EXAMPLES = [
    Example(context=(TEXTS[i],), response=TEXTS[i + 1], persona=(TEXTS[4],)) for i in range(5)
]


@pytest.fixture(scope="module")
def tok() -> HFTokenizer:
    return HFTokenizer(vocab_size=300, min_frequency=1).fit_examples(EXAMPLES * 3)


def test_specials_are_distinct_and_pad_is_not_eos(tok: HFTokenizer) -> None:
    ids = [tok.bos_id, tok.pad_id, tok.eos_id, tok.persona_id, tok.user_id, tok.bot_id]
    assert len(set(ids)) == 6 and tok.pad_id != tok.eos_id
    assert len(tok) <= 300 and tok.fitted
    # Text that spells a special token is plain text, never a marker.
    assert not set(tok.encode("hi <bot> there <eot>")) & tok.special_ids
    ids = [*tok.encode("hello there"), tok.eos_id, *tok.encode("after")]
    assert tok.decode(ids) == "hello there"


def segments_of(tok: HFTokenizer, ids: list[int], types: list[int]) -> list[tuple[int, int]]:
    """(marker, type) at each marker position."""
    return [(i, t) for i, t in zip(ids, types, strict=True) if i in tok.markers]


def test_layout_labels_and_token_types(tok: HFTokenizer) -> None:
    ex = Example(context=(TEXTS[0], TEXTS[1], TEXTS[2]), response=TEXTS[3], persona=(TEXTS[4],))
    split = tok.encode_examples([ex], max_length=200, length_policy="filter")
    batch = tok.collate(split, [0])
    ids, types, labels = (batch[k][0].tolist() for k in ("input_ids", "token_type_ids", "labels"))
    reply = tok.encode(TEXTS[3])
    # <persona> ... <user> t0 <eot> <bot> t1 <eot> <user> t2 <eot> <bot> reply <eot>
    assert ids[0] == tok.persona_id
    markers = [i for i in ids if i in tok.markers]
    assert markers == [tok.persona_id, tok.user_id, tok.bot_id, tok.user_id, tok.bot_id]
    assert ids[-len(reply) - 2 :] == [tok.bot_id, *reply, tok.eos_id]
    # Loss on the reply and its <eot> only.
    assert labels[: len(ids) - len(reply) - 1] == [IGNORE_INDEX] * (len(ids) - len(reply) - 1)
    assert labels[-len(reply) - 1 :] == [*reply, tok.eos_id]
    # Every token's type is its segment's marker; the reply is <bot>.
    assert all(t == m for m, t in segments_of(tok, ids, types))
    assert set(types[-len(reply) - 2 :]) == {tok.bot_id}
    assert set(types[: ids.index(tok.user_id)]) == {tok.persona_id}
    # The generation prompt is everything before the reply, left-padded, same types.
    prompt = batch["prompt_ids"][0][batch["prompt_mask"][0].bool()].tolist()
    assert prompt == ids[: len(ids) - len(reply) - 1] and prompt[-1] == tok.bot_id
    assert batch["prompt_types"][0][-len(prompt) :].tolist() == types[: len(prompt)]
    assert tok.decode(batch["reply_ids"][0].tolist()) == TEXTS[3]
    assert batch["n_words"].tolist() == [9] and batch["index"].tolist() == [0]


def test_speakers_count_back_from_the_reply(tok: HFTokenizer) -> None:
    """The turn before the reply is always <user>, whatever the history length."""
    for n in range(1, 5):
        prompt = tok.encode_prompt((), TEXTS[:n], budget=500)
        markers = [i for i in prompt if i in tok.markers]
        expected = [tok.user_id if (n - 1 - k) % 2 == 0 else tok.bot_id for k in range(n)]
        assert markers == [*expected, tok.bot_id]
        types = tok.token_types(prompt)
        last_turn = len(prompt) - 1 - prompt[::-1].index(tok.user_id)
        assert set(types[last_turn:-1]) == {tok.user_id}


def test_history_is_truncated_from_the_left(tok: HFTokenizer) -> None:
    context = TEXTS[:4]
    full = tok.encode_prompt((TEXTS[4],), context, budget=500)
    persona_len = 1 + len(tok.encode(TEXTS[4]))
    for budget in (persona_len + 30, persona_len + 12, persona_len + 4):
        cut = tok.encode_prompt((TEXTS[4],), context, budget=budget)
        assert budget - 1 <= len(cut) <= budget  # (a lone <eot> of a cut turn is dropped)
        assert cut[:persona_len] == full[:persona_len]  # the persona is kept
        history = cut[persona_len:]
        assert full[-(len(history) - 1) :] == history[1:]  # the newest tokens survive
        assert history[0] in (tok.user_id, tok.bot_id)  # a cut turn keeps its speaker marker
    # Persona capped by max_persona_tokens; no room: only <bot>.
    capped = HFTokenizer(max_persona_tokens=4)
    capped.load_state_dict(tok.state_dict())
    prompt = capped.encode_prompt((TEXTS[4],), (), budget=100)
    assert prompt[0] == tok.persona_id and len(prompt) == 4 + 1
    assert tok.encode_prompt((TEXTS[4],), context, budget=1) == [tok.bot_id]


def test_reply_length_policy(tok: HFTokenizer) -> None:
    reply_len = len(tok.encode(TEXTS[3]))
    ex = Example(context=(TEXTS[0],), response=TEXTS[3])
    assert len(tok.encode_examples([ex], reply_len + 1, "filter")) == 0
    kept = tok.encode_examples([ex], reply_len + 1, "truncate")
    assert len(kept) == 1 and kept.target(0).tolist()[-1] == tok.eos_id
    assert len(kept.source(0)) + len(kept.target(0)) <= reply_len + 1
    fits = tok.encode_examples([ex], reply_len + 2, "filter")
    assert fits.source(0).tolist() == [tok.bot_id]  # no room left for history
    # The tokenizer's own max_length wins over data.max_length.
    own = HFTokenizer(max_length=reply_len + 1)
    own.load_state_dict(tok.state_dict())
    assert len(own.encode_examples([ex], 1000, "filter")) == 0


def test_packing_restarts_positions_and_keeps_labels(tok: HFTokenizer) -> None:
    split = tok.encode_examples(EXAMPLES, max_length=40, length_policy="truncate")
    plain = tok.collate(split, list(range(5)))
    packer = HFTokenizer(pack_to=80)
    packer.load_state_dict(tok.state_dict())
    packed = packer.collate(split, list(range(5)))
    assert packed["input_ids"].shape[0] < 5 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] <= 80
    for key in ("prompt_ids", "reply_ids", "n_words", "index"):
        assert torch.equal(packed[key], plain[key]), key
    labels = lambda b: sorted(b["labels"][b["labels"] != IGNORE_INDEX].tolist())  # noqa: E731
    assert labels(packed) == labels(plain)
    real = packed["token_type_ids"] != tok.pad_id
    starts = (packed["position_ids"] == 0) & real
    assert int(starts.sum()) == 5  # each example starts again at position 0
    assert not packed["position_ids"][~real].any() and not (packed["input_ids"] == tok.pad_id).any()
    assert first_fit_decreasing([5, 3, 4, 2], 7) == [[0, 3], [1, 2]]


def test_state_is_plain_and_round_trips(tok: HFTokenizer, tmp_path: Path) -> None:
    state = tok.state_dict()
    json.dumps(state)  # plain types only
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = HFTokenizer().load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.fingerprint() == tok.fingerprint() and len(loaded) == len(tok)
    assert loaded.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    hf = tok.to_transformers()
    hf.save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.pad_token_id == tok.pad_id and again.eos_token_id == tok.eos_id
    assert again(TEXTS[2], add_special_tokens=False).input_ids == tok.encode(TEXTS[2])


def test_pretrained_tokenizer_gets_the_specials(tok: HFTokenizer, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer.from_str(tok.backend.to_str())
    PreTrainedTokenizerFast(tokenizer_object=base, eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "pre"
    )
    fitted = HFTokenizer(pretrained=str(tmp_path / "pre")).fit_examples([])
    assert fitted.encode(TEXTS[0]) == tok.encode(TEXTS[0]) and len(fitted) == len(tok)
    with pytest.raises(ConfigError, match="no such directory"):
        HFTokenizer(pretrained=str(tmp_path / "nowhere")).fit_examples([])


def test_personas_from_a_split_and_persona_groups(tmp_path: Path) -> None:
    path = write_persona_jsonl(tmp_path / "p.jsonl", n_lines=60, n_personas=6)
    dialogues, _ = PersonaJsonlReader(path).read()
    assert len({d.group for d in dialogues}) == 6  # rows of one persona share a group
    parts = split_by_group(dialogues, [0.6, 0.2, 0.2], seed=0)
    groups = [{d.group for d in part} for part in parts]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2])
    examples = [Example((), d.turns[-1].text, tuple(d.persona)) for d in parts[2]]
    tok = HFTokenizer(vocab_size=300).fit_examples(examples)
    split = tok.encode_examples(examples, 64, "truncate")
    personas = tok.personas(split, 5)
    assert personas and set(personas) <= {d.persona[0] for d in parts[2]}
    assert len(personas) == len(set(personas))
