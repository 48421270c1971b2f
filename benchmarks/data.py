"""Data: parse + tokenize the Cornell slice and a full-size synthetic Cornell, cold and cached.

The DataModule is built as `conf/data/cornell.yaml` + `model=gru_attn` build it (min_count 3,
max_length 10, single-turn pairs, split by movie). Cold: `setup()` with an empty cache folder
(read, split, fit the vocabulary, encode, write the cache). Cached: `setup()` of a new DataModule
over the same files and cache. Each runs in a fresh process, so its peak RSS is its own (with
--quick all run in one process). The full-size corpus (`tests/helpers/synthetic_cornell.py`:
304,713 lines, 83,097 conversations, 617 movies) is generated into a temporary folder first.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CORNELL_SLICE, Figure, peak_rss_mb, run_isolated
from tests.helpers.synthetic_cornell import (
    FULL_CONVERSATIONS,
    FULL_LINES,
    FULL_MOVIES,
    write_synthetic_cornell,
)


def setup_once(path: str, cache_dir: str) -> dict[str, Any]:
    """(child) Seconds of DataModule.setup(), and what it built."""
    from dialoglab.data.corpora.cornell import CornellReader
    from dialoglab.data.datamodule import DialogueDataModule
    from dialoglab.data.tokenization import WordTokenizer

    dm = DialogueDataModule(
        functools.partial(CornellReader, download=False),
        WordTokenizer(min_count=3),
        path=path,
        max_length=10,
        cache_dir=cache_dir,
    )
    start = time.perf_counter()
    dm.setup("fit")
    return {
        "seconds": time.perf_counter() - start,
        "pairs": sum(len(s) for s in dm.splits.values()),
        "vocab": len(dm.tokenizer),
    }


def _measure(path: Path, work: Path, isolated: bool) -> list[dict[str, Any]]:
    """Cold then cached setup, each in a fresh process when `isolated`."""
    kwargs = {"path": str(path), "cache_dir": str(work / "cache")}
    if isolated:
        return [run_isolated("benchmarks.data:setup_once", kwargs) for _ in range(2)]
    return [{**setup_once(**kwargs), "peak_rss_mb": peak_rss_mb()} for _ in range(2)]


def _figures(label: str, cold: dict, cached: dict, targets: bool, note: str) -> list[Figure]:
    return [
        Figure(f"{label}: parse+tokenize, cold", round(cold["seconds"], 2), "s",
               target=("<=", 5.0) if targets else None,
               note=f"{note}{cold['pairs']} pairs, vocab {cold['vocab']}; writes the cache"),
        Figure(f"{label}: cached reload", round(cached["seconds"], 3), "s",
               target=("<=", 0.5) if targets else None),
        Figure(f"{label}: peak RSS, cold", round(cold["peak_rss_mb"]), "MiB"),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    work = Path(tempfile.mkdtemp(prefix="dialoglab-bench-data-"))
    try:
        if (CORNELL_SLICE / "movie_lines.txt").is_file():
            cold, cached = _measure(CORNELL_SLICE, work / "slice", isolated=not quick)
            figures += _figures("Cornell slice", cold, cached, False, "")
        full = (FULL_LINES, FULL_CONVERSATIONS, FULL_MOVIES)
        lines, conversations, movies = (3000, 800, 40) if quick else full
        write_synthetic_cornell(work / "synthetic", lines, conversations, movies)
        cold, cached = _measure(work / "synthetic", work / "run", isolated=not quick)
        label = "small synthetic Cornell (quick)" if quick else "full-size synthetic Cornell"
        figures += _figures(label, cold, cached, True, f"{lines:,} lines; ")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures
