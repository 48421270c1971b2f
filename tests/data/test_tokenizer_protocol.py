"""Both tokenizers satisfy the shared `Tokenizer` protocol, and the class paths that saved configs
name keep importing; a state round trip through the protocol's methods encodes alike."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.hf_tokenization import HFTokenizer
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.data.tokenizer_protocol import Tokenizer

TEXTS = [
    "hello there, how are you today?",
    "i am fine, thanks for asking.",
    "what do you like to do on weekends?",
    "i like hiking in the mountains and reading books.",
    "a sailor who loves the sea.",
]
EXAMPLES = [
    Example(context=(TEXTS[i],), response=TEXTS[i + 1], persona=(TEXTS[4],)) for i in range(4)
]
# what the protocol declares: its annotated attributes, properties and methods
PROTOCOL_MEMBERS = set(Tokenizer.__annotations__) | {
    name for name in vars(Tokenizer) if not name.startswith("_") or name == "__len__"
}


def make(kind: str) -> Tokenizer:
    if kind == "word":
        return WordTokenizer()
    return HFTokenizer(vocab_size=300, min_frequency=1)


@pytest.mark.parametrize("kind", ["word", "hf"])
def test_fitted_tokenizers_satisfy_the_protocol(kind: str) -> None:
    tok = make(kind).fit_examples(EXAMPLES)
    assert isinstance(tok, Tokenizer) and tok.fitted
    assert {"fit_examples", "collate", "state_dict", "pad_id", "fitted"} <= PROTOCOL_MEMBERS
    for name in PROTOCOL_MEMBERS:
        assert hasattr(tok, name), name
        member = getattr(Tokenizer, name, None)
        if inspect.isfunction(member):  # same parameters, apart from optional extras
            want = list(inspect.signature(member).parameters)
            got = inspect.signature(getattr(type(tok), name)).parameters
            assert list(got)[: len(want)] == want, name
            assert all(p.default is not p.empty for p in list(got.values())[len(want) :]), name


@pytest.mark.parametrize("kind", ["word", "hf"])
def test_state_round_trip_through_the_protocol(kind: str) -> None:
    tok = make(kind).fit_examples(EXAMPLES)
    loaded = make(kind).load_state_dict(tok.state_dict())
    assert loaded.fitted and len(loaded) == len(tok)
    assert loaded.fingerprint() == tok.fingerprint() and loaded.config() == tok.config()
    split = loaded.encode_examples(EXAMPLES, 32, "truncate")
    want = tok.encode_examples(EXAMPLES, 32, "truncate").state_dict()
    assert all(torch.equal(value, want[key]) for key, value in split.state_dict().items())
    batch = loaded.collate(split, [0, 1])
    assert all(v.shape[0] >= 1 for v in batch.values())
    assert loaded.decode(loaded.encode("i am fine")).startswith("i am fine")


@pytest.mark.parametrize(
    "path",
    ["dialoglab.data.tokenization.WordTokenizer", "dialoglab.data.hf_tokenization.HFTokenizer"],
)
def test_config_class_paths_import(path: str) -> None:
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name).__module__ == module
