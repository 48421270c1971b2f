"""DataModule: examples and splits, length policy, cache reuse, batches."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import torch

from dialoglab.data.corpora.chatterbot import ChatterbotReader
from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.dialogue import Dialogue, Example, Turn, build_examples, split_by_group
from dialoglab.data.splitting import deduplicate, pair_keys
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.errors import ConfigError, DataError

SEP = " +++$+++ "


def write_cornell(folder: Path, n_movies: int = 6, convs_per_movie: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines, convs, lid = [], [], 0
    for m in range(n_movies):
        for _ in range(convs_per_movie):
            ids = []
            for k in range(3):
                lid += 1
                text = ["how are you ?", "i'm fine thanks .", "good to hear it ."][k]
                lines.append(SEP.join([f"L{lid}", f"u{m}{k % 2}", f"m{m}", "NAME", text]))
                ids.append(f"L{lid}")
            convs.append(SEP.join([f"u{m}0", f"u{m}1", f"m{m}", repr(ids)]))
    (folder / "movie_lines.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "movie_conversations.txt").write_text("\n".join(convs) + "\n", encoding="latin-1")
    return folder


def make_dm(path: Path, cache: Path | None, **kwargs) -> DialogueDataModule:
    reader = functools.partial(CornellReader, download=False)
    return DialogueDataModule(
        reader, WordTokenizer(), path=str(path), cache_dir=cache and str(cache), **kwargs
    )


def test_examples_keep_context_and_alternation() -> None:
    d = Dialogue("d", [Turn("a", "1"), Turn("b", "2"), Turn("a", "3"), Turn("b", "4")], "m0")
    assert [(e.context, e.response) for e in build_examples([d], 0)] == [
        (("1",), "2"), (("2",), "3"), (("3",), "4"),
    ]  # fmt: skip
    assert build_examples([d], 2)[-1].context == ("2", "3")
    assert build_examples([d], 5)[-1].context == ("1", "2", "3")


def test_split_by_group_never_shares_a_movie() -> None:
    dialogues = [
        Dialogue(str(i), [Turn("a", "x"), Turn("b", "y")], f"m{i % 17}") for i in range(340)
    ]
    parts = split_by_group(dialogues, [0.8, 0.1, 0.1], seed=3)
    groups = [{d.group for d in p} for p in parts]
    assert (
        not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    )
    assert sum(map(len, parts)) == 340 and all(parts)
    assert split_by_group(dialogues, [0.8, 0.1, 0.1], seed=3) == parts  # deterministic


def test_setup_batches_and_cache_reuse(tmp_path: Path, monkeypatch) -> None:
    corpus = write_cornell(tmp_path / "corpus")
    dm = make_dm(corpus, tmp_path / "cache", batch_size=4, split=(0.6, 0.2, 0.2))
    dm.prepare_data()
    dm.setup()
    assert len(list((tmp_path / "cache").rglob("data.pt"))) == 1
    batch = next(iter(dm.train_dataloader()))
    B = batch["src"].shape[0]
    assert batch["decoder_input"][:, 0].eq(dm.tokenizer.sos_id).all()
    # target is decoder_input shifted left, with <eos> where the reply ends
    lengths = (batch["target"] != dm.tokenizer.pad_id).sum(1)
    assert batch["target"][torch.arange(B), lengths - 1].eq(dm.tokenizer.eos_id).all()
    shifted = batch["decoder_input"][:, 1:]
    real = shifted != dm.tokenizer.pad_id
    assert torch.equal(shifted[real], batch["target"][:, :-1][real])
    assert batch["src"][torch.arange(B), batch["src_lengths"] - 1].eq(dm.tokenizer.eos_id).all()

    # A second DataModule with the same settings reloads the cache instead of reading the corpus.
    def fail(*args, **kwargs):
        raise AssertionError("corpus re-read although the cache was valid")

    dm2 = make_dm(corpus, tmp_path / "cache", batch_size=4, split=(0.6, 0.2, 0.2))
    monkeypatch.setattr(CornellReader, "read", fail)
    dm2.setup()
    assert dm2.tokenizer.itos == dm.tokenizer.itos
    assert torch.equal(dm2.splits["train"].src, dm.splits["train"].src)


def test_max_length_filter_and_truncate(tmp_path: Path) -> None:
    corpus = write_cornell(tmp_path / "corpus")
    with pytest.raises(DataError, match="max_length"):
        make_dm(corpus, None, max_length=2).setup()
    dm = make_dm(corpus, None, max_length=3, length_policy="truncate")
    dm.setup()
    assert int(dm.splits["train"].source_lengths().max()) <= 2


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.batch_size"):
        make_dm(tmp_path, None, batch_size=0)
    with pytest.raises(ConfigError, match="data.length_policy"):
        make_dm(tmp_path, None, length_policy="cut")


def ex(context: str, reply: str) -> Example:
    return Example((context,), reply)


def test_deduplicate_moves_repeats_to_the_earliest_split() -> None:
    examples = {
        "train": [ex("Hi!", "hello"), ex("a", "b")],
        "val": [ex("hi !", "Hello"), ex("c", "d"), ex("c", "d")],
        "test": [ex("C", "D."), ex("C", "D"), ex("e", "f"), ex("a", "b")],
    }
    out, stats = deduplicate(examples)
    assert out == {
        "train": [ex("Hi!", "hello"), ex("a", "b"), ex("hi !", "Hello"), ex("a", "b")],
        "val": [ex("c", "d"), ex("c", "d"), ex("C", "D")],  # a repeat within a split stays
        "test": [ex("C", "D."), ex("e", "f")],  # "D." is not "D": punctuation is kept
    }
    assert stats.repeated == 4
    assert stats.moved == {"val->train": 1, "test->val": 1, "test->train": 1}
    assert "1 test -> train" in stats.describe()


def test_chatterbot_test_pairs_never_appear_in_training() -> None:
    """chatterbot-corpus repeats Q/As across conversations: de-duplicated, no val/test pair is a
    training pair; without it, some are (what made the quickstart's BLEU a memorisation score)."""

    def overlap(dm: DialogueDataModule) -> tuple[int, int]:
        examples = dm.examples_by_split(dm.make_reader())
        train = set(pair_keys(examples["train"]))
        held_out = pair_keys(examples["val"] + examples["test"])
        return sum(k in train for k in held_out), len(held_out)

    make = functools.partial(DialogueDataModule, ChatterbotReader, WordTokenizer(), cache_dir=None)
    assert overlap(make(deduplicate=False))[0] > 50
    dm = make()
    shared, held_out = overlap(dm)
    assert shared == 0 and held_out > 100
    moved = dm.read_stats["duplicates"]["moved"]
    assert moved.get("test->train", 0) > 50 and moved.get("val->train", 0) > 50


def test_the_data_summary_is_one_line_with_the_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    """One event, one line: the summary carries the de-duplication, which is not told twice."""
    dm = DialogueDataModule(ChatterbotReader, WordTokenizer(), cache_dir=None)
    with caplog.at_level(logging.INFO, logger="dialoglab.data"):
        dm.setup()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data:")]
    assert len(summaries) == 1, summaries
    assert "examples repeat an earlier (context, reply) pair" in summaries[0]


def test_split_all_scores_every_dialogue_with_a_given_vocabulary(tmp_path: Path) -> None:
    """data.split=all: every example in test; fine for a checkpoint's fitted tokenizer (eval),
    a clear error when a tokenizer would have to be fitted on no training example."""
    trained = make_dm(write_cornell(tmp_path / "a"), None)
    trained.setup()
    other = write_cornell(tmp_path / "b", n_movies=2, convs_per_movie=3)
    reader = functools.partial(CornellReader, download=False)
    dm = DialogueDataModule(reader, trained.tokenizer, path=str(other), split="all", cache_dir=None)
    dm.setup()
    assert [len(dm.splits[name]) for name in ("train", "val", "test")] == [0, 0, 2 * 3 * 2]
    assert len(next(iter(dm.test_dataloader()))["src"]) == 12
    with pytest.raises(DataError, match="training split holds no example"):
        make_dm(other, None, split="all").setup()
    with pytest.raises(ConfigError, match="data.split must be 3 ratios .* or 'all'"):
        make_dm(other, None, split="most")
