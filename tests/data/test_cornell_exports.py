"""Cornell-format exports as they vary: CRLF and UTF-8, ids restarting per movie, truncated files,
few movies; skipped rows summarised by kind, and `data.split_by=movie|conversation`."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest

from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.errors import ConfigError, DataError
from tests.helpers.synthetic_cornell import SEP, write_small_cornell

CYRILLIC = "\u0441\u043b\u043e\u0432\u043e"  # "слово"


def read(folder: Path) -> tuple[list, object]:
    return CornellReader(folder, download=False).read()


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_utf8_export_with_ids_restarting_per_movie(tmp_path: Path, newline: str) -> None:
    """Line ids L1, L2, ... in every movie: each conversation gets its own movie's lines."""
    counts = write_small_cornell(
        tmp_path, 3, 4, newline=newline, encoding="utf-8", restart_ids=True, word=CYRILLIC
    )
    dialogues, stats = read(tmp_path)
    assert stats.total_skipped == 0
    assert len(dialogues) == counts["conversations"] == 12
    for dialogue in dialogues:
        movie = dialogue.group.removeprefix("m")
        assert all(t.text.startswith(f"{CYRILLIC} {movie} ") for t in dialogue.turns)
        assert not any("\r" in t.text for t in dialogue.turns)
    assert dialogues[4].turns[0].text == f"{CYRILLIC} 1 0 0 why?"  # movie 1's L1, not movie 0's


def test_skips_are_summarised_by_kind_with_a_few_examples(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_small_cornell(tmp_path, 2, 10)
    lines = tmp_path / "movie_lines.txt"
    rows = lines.read_text(encoding="latin-1").splitlines()
    # every row twice (40 duplicated ids), plus two malformed rows
    lines.write_text("\n".join([*rows, *rows, "L999", "junk"]) + "\n", encoding="latin-1")
    with caplog.at_level(logging.WARNING):
        dialogues, stats = read(tmp_path)
    assert len(dialogues) == 20  # the first copy of each line is used
    assert stats.skipped == {
        "duplicate line id (in the same movie)": 60,
        "malformed line row (expected 5 fields)": 2,
    }
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    summary = warning.splitlines()
    assert summary[1:] == [
        "  60 duplicate line id (in the same movie) (e.g. movie_lines.txt:61 'L1', "
        "movie_lines.txt:62 'L2', movie_lines.txt:63 'L3')",
        "  2 malformed line row (expected 5 fields) (e.g. movie_lines.txt:121, "
        "movie_lines.txt:122)",
    ]
    assert "skipped 62 rows" in summary[0]
    assert "most of the corpus" not in warning  # every conversation was read


def test_mostly_skipped_corpus_says_so_plainly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A movie_lines.txt holding a fifth of each movie's lines: most conversations are lost."""
    write_small_cornell(tmp_path, 4, 5, restart_ids=True, keep_lines=0.2)
    with caplog.at_level(logging.WARNING):
        dialogues, stats = read(tmp_path)
    assert len(dialogues) == 4  # the first conversation of each movie
    assert stats.skipped == {"conversation references a line id missing from movie_lines.txt": 16}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "most of the corpus was skipped: only 4 of 20 dialogues are usable" in warning
    assert "truncated or does not belong with movie_conversations.txt" in warning


def make_dm(path: Path, **kwargs) -> DialogueDataModule:
    reader = functools.partial(CornellReader, download=False)
    return DialogueDataModule(
        reader, WordTokenizer(min_count=1), path=str(path), cache_dir=None, **kwargs
    )


def test_split_by_conversation_splits_a_corpus_with_two_movies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_small_cornell(tmp_path, 2, 20)
    by_movie = make_dm(tmp_path, split_by="movie")
    with caplog.at_level(logging.WARNING):
        by_movie.setup()
    assert "the test split gets no dialogue: only 2 movie groups hold" in caplog.text
    assert "data.split_by=conversation" in caplog.text
    with pytest.raises(DataError, match="test split is empty.*data.split_by=conversation"):
        by_movie.test_dataloader()

    by_conversation = make_dm(tmp_path, split_by="conversation")
    by_conversation.setup()
    sizes = {name: len(split) for name, split in by_conversation.splits.items()}
    assert all(sizes.values()) and sum(sizes.values()) == 2 * 20 * 2, sizes


def test_split_by_must_fit_the_corpus(tmp_path: Path) -> None:
    write_small_cornell(tmp_path, 2, 2)
    with pytest.raises(ConfigError, match="data.split_by='persona'.*groups dialogues by movie"):
        make_dm(tmp_path, split_by="persona").setup()


def test_conversation_rows_name_their_movie_lines(tmp_path: Path) -> None:
    """A conversation row whose movie field differs from its lines' still finds an id that only
    one movie holds (the release's corpus-wide ids)."""
    write_small_cornell(tmp_path, 1, 1)
    conv = tmp_path / "movie_conversations.txt"
    conv.write_text(SEP.join(["u0", "u1", "m9", "['L1', 'L2']"]) + "\n", encoding="latin-1")
    dialogues, stats = read(tmp_path)
    assert stats.total_skipped == 0 and [len(d.turns) for d in dialogues] == [2]
