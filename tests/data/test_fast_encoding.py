"""The bulk tokenizer path (split_many, shared token table, numpy encoding) gives exactly what the
straightforward per-text / per-example code gives: same words, vocabulary, ids and cache."""

from __future__ import annotations

import ast
import functools
import random
import re
from collections import Counter
from itertools import chain
from pathlib import Path

import pytest
import torch

from dialoglab.data.corpora.cornell import CornellReader, _parse_id_list
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.dialogue import Example, build_examples, split_by_group
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.tokenization import SPECIALS, WordTokenizer
from tests.helpers.synthetic_cornell import write_synthetic_cornell

SEP = " +++$+++ "
# Texts the bulk path must hand to the regex or treat with care: accents, other scripts, final
# sigma, stray and doubled apostrophes, curly quotes, backticks, underscores, odd whitespace.
TRICKY = [
    "Caf\u00e9 cr\u00e8me \u2014 na\u00efve r\u00e9sum\u00e9?",
    "\u0130stanbul \u03a3\u039f\u03a6\u039f\u03a3 ma\u00dfe \u039f\u0394\u039f\u03a3.",
    "'Tis goin' fine, isn't it?",
    "rock 'n' roll '' a''b ' x' 'y",
    "don`t say \u2019yes\u2019 ... ok",
    "x_y under_score __init__ a_ _b",
    "tab\there\x0bvt\x0cff\x1cfs and\u00a0nbsp",
    "Hello,world!How?are.you",
    "2nd time's the charm, 3'4 5''6",
    "...",
    "?!",
    "O'Neil's dog's bone'",
    "\u00bd \u2154 \u00b2 \u0661\u0662 digits",
    "UPPER lower MiXeD",
    "\u1e9e\u00df \ufb01ne \u2126",
]
ALPHABET = "aAbB \u00e9\u00c9'`\u2019_.,!?-;:\"\t\u03a3\u03c3\u00df0123\u00a0\u0301"


def reference_split(tok: WordTokenizer, text: str) -> list[str]:
    """The per-text regex path (what `split` always did)."""
    pattern = r"[^\W_]+(?:'[^\W_]+)*|[.!?,]" if tok.keep_punctuation else r"[^\W_]+(?:'[^\W_]+)*"
    return re.findall(pattern, tok.normalize(text))


def reference_fit(tok: WordTokenizer, texts: list[str]) -> list[str]:
    """The vocabulary as Counter + sort over each text's split words."""
    counts = Counter(chain.from_iterable(reference_split(tok, t) for t in texts))
    words = [w for w, n in counts.items() if n >= tok.min_count and w not in SPECIALS]
    words.sort(key=lambda w: (-counts[w], w))
    if tok.max_vocab_size is not None:
        words = words[: max(0, tok.max_vocab_size - len(SPECIALS))]
    return list(SPECIALS) + words


def reference_encode(
    tok: WordTokenizer, examples: list[Example], max_length: int, policy: str
) -> EncodedPairs:
    """The per-example loop: encode_context + encode, filter or truncate, count reply words."""
    limit = max_length - 1
    sources, targets, n_words = [], [], []
    for ex in examples:
        src = tok.encode_context(ex.persona, ex.context)
        tgt = tok.encode(ex.response)
        if not tgt:
            continue
        if len(src) > limit or len(tgt) > limit:
            if policy == "filter":
                continue
            src, tgt = src[-limit:], tgt[:limit]
        sources.append(src)
        targets.append(tgt)
        n_words.append(max(1, tok.count_words(tok.decode(tgt))))
    return EncodedPairs.from_lists(sources, targets, n_words)


def assert_same_pairs(got: EncodedPairs, want: EncodedPairs) -> None:
    for key, value in want.state_dict().items():
        other = got.state_dict()[key]
        assert other.dtype == value.dtype and other.shape == value.shape, key
        assert torch.equal(other, value), key


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=rng.randint(0, 14))) for _ in range(n)]


@pytest.mark.parametrize(
    "options",
    [{}, {"lowercase": False}, {"keep_punctuation": False}, {"ascii_fold": False}],
    ids=["default", "cased", "no-punct", "no-fold"],
)
def test_split_many_equals_split(options: dict) -> None:
    tok = WordTokenizer(**options)
    texts = TRICKY + random_texts(0, 3000) + [""]
    assert tok.split_many(texts) == [reference_split(tok, t) for t in texts]
    assert [tok.split(t) for t in texts] == [reference_split(tok, t) for t in texts]
    # a text holding its own newline falls back to the per-text path
    texts = ["one\ntwo, three", *TRICKY]
    assert tok.split_many(texts) == [reference_split(tok, t) for t in texts]
    assert tok.split_many([]) == []


def small_corpus(folder: Path) -> Path:
    """A generated Cornell corpus, plus one movie whose lines are the tricky texts."""
    write_synthetic_cornell(folder, n_lines=1500, n_conversations=400, n_movies=30, n_words=600)
    lines = [SEP.join((f"X{k}", "u", "mx", "U", t)) for k, t in enumerate(TRICKY)]
    ids = [f"X{k}" for k in range(len(TRICKY))]
    convs = [SEP.join(("u", "v", "mx", repr(ids[i : i + 4]))) for i in range(0, len(ids), 4)]
    with open(folder / "movie_lines.txt", "a", encoding="latin-1", errors="replace") as f:
        f.write("\n".join(lines) + "\n")
    with open(folder / "movie_conversations.txt", "a", encoding="latin-1") as f:
        f.write("\n".join(convs) + "\n")
    return folder


@pytest.mark.parametrize("policy", ["filter", "truncate"])
@pytest.mark.parametrize("context_turns", [0, 3])
def test_fast_encoding_matches_per_example_reference(
    tmp_path: Path, policy: str, context_turns: int
) -> None:
    dialogues, _ = CornellReader(small_corpus(tmp_path), download=False).read()
    parts = split_by_group(dialogues, (0.8, 0.1, 0.1), 0)
    splits = [build_examples(part, context_turns) for part in parts]
    # persona examples: texts joined with <sep>, and one with nothing but a persona
    splits[0] += [
        Example(("hi there", "caf\u00e9"), "fine, you?", ("i like tea.", "i'm 'ere")),
        Example((), "just a reply", ("a persona line",)),
    ]
    train_texts = sorted({t for ex in splits[0] for t in (*ex.persona, *ex.context, ex.response)})
    for options in ({"min_count": 2}, {"min_count": 1, "max_vocab_size": 200}):
        tok = WordTokenizer(**options)
        with tok.reusing_tokens():  # as DialogueDataModule.build uses it
            tok.fit_examples(splits[0])
            got = [tok.encode_examples(exs, 8, policy) for exs in splits]
        assert tok.itos == reference_fit(WordTokenizer(**options), train_texts)
        assert len(got[0]) > 30  # enough pairs to mean something
        for exs, split in zip(splits, got, strict=True):
            assert_same_pairs(split, reference_encode(tok, exs, 8, policy))
            # and outside `reusing_tokens`, each call on its own
            assert_same_pairs(tok.encode_examples(exs, 8, policy), split)


def test_fit_counts_every_occurrence_and_refits_from_scratch() -> None:
    texts = ["b a a", "c", "b a a", "d d"]
    tok = WordTokenizer().fit(texts)
    assert tok.itos == reference_fit(tok, texts)
    tok.fit(["x y", "y"])  # a refit forgets the old words
    assert tok.itos == [*SPECIALS, "y", "x"]
    assert WordTokenizer().fit_examples([]).itos == list(SPECIALS)
    assert len(tok.encode_examples([], 5, "filter")) == 0


def test_datamodule_cache_matches_reference(tmp_path: Path) -> None:
    folder = small_corpus(tmp_path / "corpus")
    reader = functools.partial(CornellReader, download=False)
    dm = DialogueDataModule(
        reader, WordTokenizer(min_count=2), path=str(folder), max_length=10, cache_dir=None
    )
    data = dm.build()
    dialogues, _ = CornellReader(folder, download=False).read()
    parts = split_by_group(dialogues, dm.split, dm.split_seed)
    examples = [build_examples(part, 0) for part in parts]
    train_texts = sorted({t for ex in examples[0] for t in (*ex.context, ex.response)})
    assert data["tokenizer"]["itos"] == reference_fit(WordTokenizer(min_count=2), train_texts)
    for name, exs in zip(("train", "val", "test"), examples, strict=True):
        want = reference_encode(dm.tokenizer, exs, 10, "filter")
        assert_same_pairs(EncodedPairs.from_state_dict(data["splits"][name]), want)
    assert dm.tokenizer._tokens is None  # the shared token table is dropped after the build


def reference_parse_id_list(field: str) -> list[str] | None:
    """What the field means: the Python list of strings literal_eval reads, else None."""
    try:
        value = ast.literal_eval(field.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    is_str_list = isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value if is_str_list else None


@pytest.mark.parametrize(
    "field",
    [
        "['L1', 'L2', 'L3']", " ['L194', 'L195']\t", "['L1']", "['']", "[']", "[]", "['a','b']",
        "['a', \"b\"]", "['a\\'b', 'c']", "['a\\\\b']", "['it's', 'x']", "['a', 'b', ]",
        "['a'] + ['b']", "['a', 1]", "('a', 'b')", "'a', 'b'", "['a'", "", "['a', 'b'",
    ],
)  # fmt: skip
def test_conversation_id_list_parsing_unchanged(field: str) -> None:
    assert _parse_id_list(field) == reference_parse_id_list(field)
