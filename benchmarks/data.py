"""Data: parse + tokenize the Cornell slice and a full-size synthetic Cornell, cold and cached.

The DataModule is built as `data=cornell model=gru_attn` builds it. Cold: `setup()` with an empty
cache (read, split, fit the vocabulary, encode, write the cache); cached: a new DataModule over
the same files and cache. Each runs in a fresh process (with --quick, all in this one), so its
peak RSS is its own.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CORNELL_SLICE, Figure, peak_rss_mb, run_isolated
from tests.helpers.synthetic_cornell import FULL_LINES, write_synthetic_cornell


def setup_once(path: str, cache_dir: str) -> dict[str, Any]:
    """(child) Seconds of building and setting up the DataModule, and what it built (modules
    imported before the clock starts: this times the data, not Python's imports)."""
    import dialoglab.data.corpora.cornell
    import dialoglab.data.datamodule
    import dialoglab.data.tokenization  # noqa: F401
    from tests.helpers.workloads import cornell_datamodule

    start = time.perf_counter()
    dm = cornell_datamodule(path, cache_dir=cache_dir)  # data=cornell model=gru_attn's settings
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
    with tempfile.TemporaryDirectory(prefix="dialoglab-bench-data-") as tmp:
        work = Path(tmp)
        if (CORNELL_SLICE / "movie_lines.txt").is_file():
            cold, cached = _measure(CORNELL_SLICE, work / "slice", isolated=not quick)
            figures += _figures("Cornell slice", cold, cached, False, "")
        sizes = (3000, 800, 40) if quick else ()  # lines, conversations, movies; () full-size
        write_synthetic_cornell(work / "synthetic", *sizes)
        cold, cached = _measure(work / "synthetic", work / "run", isolated=not quick)
        label = "small synthetic Cornell (quick)" if quick else "full-size synthetic Cornell"
        lines = sizes[0] if quick else FULL_LINES
        figures += _figures(label, cold, cached, True, f"{lines:,} lines; ")
    return figures
