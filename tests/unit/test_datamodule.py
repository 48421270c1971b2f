"""DataModule: examples and splits, length policy, cache reuse, batches."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.dialogue import Dialogue, Turn, build_examples, split_by_group
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
