"""4. Data: parse + tokenize the Cornell slice and a full-size synthetic Cornell, cold and cached.

Each measurement runs in a fresh child process (its peak RSS is its own; with --quick all run in
one process, so the RSS figures are not separate) and builds the
DataModule exactly as `conf/data/cornell.yaml` + `model=gru_attn` do (min_count 3, max_length 10,
single-turn pairs, split by movie). Cold: `setup()` with an empty cache folder — read, split,
fit the vocabulary, encode and write the cache. Cached: `setup()` of a new DataModule over the
same files and cache. The cold breakdown: "read+split" parses the files and builds the examples
of each split; "fit vocabulary" tokenizes each distinct training text once (in bulk) and counts
its words; "encode" tokenizes only the validation/test texts not seen in training (the training
texts' words are reused), maps words to ids and gathers the (context, reply) arrays. The full-size
corpus (304,713 lines, 83,097 conversations, 617 movies) is
generated into a temporary folder first (see `synthetic_cornell.py`) and deleted afterwards.

Also measured here, on the full-size training split: the collate's cost per batch of 64, and the
share of padded positions with random batches vs `data.bucket_by_length=true`.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dialoglab.bench.common import (
    CORNELL_SLICE,
    Figure,
    median,
    peak_rss_mb,
    run_isolated,
    time_calls,
)
from dialoglab.bench.synthetic_cornell import (
    FULL_CONVERSATIONS,
    FULL_LINES,
    FULL_MOVIES,
    write_synthetic_cornell,
)
from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.datamodule import DialogueDataModule  # imported before the RSS baseline
from dialoglab.data.tokenization import WordTokenizer


def _datamodule(path: str, cache_dir: str) -> Any:
    return DialogueDataModule(
        functools.partial(CornellReader, download=False),
        WordTokenizer(min_count=3),
        path=path,
        max_length=10,
        cache_dir=cache_dir,
    )


def setup_once(path: str, cache_dir: str, extras: bool = False) -> dict[str, Any]:
    """(child) Time DataModule.setup(); with a breakdown of where a cold build spends its time."""
    dm = _datamodule(path, cache_dir)
    parts: dict[str, float] = {"read+split": 0.0, "fit vocabulary": 0.0, "encode": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - start

        return wrapper

    dm.examples_by_split = timed("read+split", dm.examples_by_split)
    dm.tokenizer.fit_examples = timed("fit vocabulary", dm.tokenizer.fit_examples)
    dm.encode = timed("encode", dm.encode)
    start = time.perf_counter()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "seconds": seconds,
        "parts": parts,
        "examples": {name: len(s) for name, s in dm.splits.items()},
        "vocab": len(dm.tokenizer),
    }
    if extras:
        result.update(_loader_figures(dm))
    return result


def _loader_figures(dm: Any) -> dict[str, float]:
    """Collate microseconds per batch of 64, and padding with random vs bucketed batches."""
    import torch
    from torch.utils.data import BatchSampler, RandomSampler

    from dialoglab.data.sampling import BucketBatchSampler, padding_fraction

    split = dm.splits["train"]
    n = len(split)
    torch.manual_seed(0)
    index_batches = list(BatchSampler(RandomSampler(range(n)), 64, False))[:200]
    k = iter(range(10**9))
    times = time_calls(
        lambda: dm.tokenizer.collate(split, index_batches[next(k) % len(index_batches)]),
        repeats=len(index_batches),
        warmup=5,
    )
    src, tgt = split.source_lengths(), split.target_lengths()
    key = (tgt * (int(src.max()) + 1) + src).tolist()
    random_batches = list(BatchSampler(RandomSampler(range(n)), 64, False))
    bucketed = list(BucketBatchSampler(RandomSampler(range(n)), key, 64))
    # padded positions the model computes on: source (+<eos>) and target (+<eos>) separately
    src_len = (src + 1).tolist()
    tgt_len = (tgt + 1).tolist()

    def padding(batches: list[list[int]]) -> float:
        real = sum(src_len) + sum(tgt_len)
        padded = sum(
            len(b) * (max(src_len[i] for i in b) + max(tgt_len[i] for i in b)) for b in batches
        )
        return 1 - real / padded

    return {
        "collate_us": median(times) * 1e6,
        "padding_random": padding(random_batches),
        "padding_bucketed": padding(bucketed),
        "padding_target_only_random": padding_fraction(random_batches, tgt_len),
    }


def _measure(path: Path, work: Path, extras: bool, isolated: bool) -> tuple[dict, dict]:
    """Cold then cached setup, each in a fresh process when `isolated` (else in this one)."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    results = []
    for kwargs in (
        {"path": str(path), "cache_dir": str(cache)},
        {"path": str(path), "cache_dir": str(cache), "extras": extras},
    ):
        if isolated:
            results.append(run_isolated("dialoglab.bench.data:setup_once", kwargs))
        else:
            result = setup_once(**kwargs)
            results.append({**result, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": 0.0})
    return results[0], results[1]


def _rss_note(result: dict) -> str:
    if not result.get("rss_after_imports_mb"):
        return "measured in the runner's child with everything else (--quick)"
    return f"{result['rss_after_imports_mb']:.0f} MiB after imports"


def _breakdown(result: dict) -> str:
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in result["parts"].items())
    return f"{parts}; {sum(result['examples'].values())} pairs, vocab {result['vocab']}"


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    work = Path(tempfile.mkdtemp(prefix="dialoglab-bench-data-"))
    try:
        if (CORNELL_SLICE / "movie_lines.txt").is_file():
            cold, cached = _measure(CORNELL_SLICE, work / "slice", extras=False, isolated=not quick)
            figures += [
                Figure("Cornell slice: parse+tokenize, cold", round(cold["seconds"], 2), "s",
                       note=_breakdown(cold) + "; includes writing the cache"),
                Figure("Cornell slice: cached reload", round(cached["seconds"], 3), "s"),
                Figure("Cornell slice: peak RSS, cold", round(cold["peak_rss_mb"]), "MiB",
                       note=_rss_note(cold)),
            ]  # fmt: skip
        if quick:
            counts = {"n_lines": 3000, "n_conversations": 800, "n_movies": 40}
        else:
            counts = {
                "n_lines": FULL_LINES,
                "n_conversations": FULL_CONVERSATIONS,
                "n_movies": FULL_MOVIES,
            }
        start = time.perf_counter()
        written = write_synthetic_cornell(work / "synthetic", **counts)
        generated = time.perf_counter() - start
        cold, cached = _measure(
            work / "synthetic", work / "synthetic-run", extras=True, isolated=not quick
        )
        label = "full-size synthetic" if not quick else "small synthetic (quick)"
        size = f"{written['lines']:,} lines, {written['conversations']:,} conversations"
        figures += [
            Figure(f"{label}: parse+tokenize, cold", round(cold["seconds"], 2), "s",
                   target=("<=", 5.0),
                   note=f"{size} (generated in {generated:.1f} s); " + _breakdown(cold)
                   + "; includes writing the cache"),
            Figure(f"{label}: cached reload", round(cached["seconds"], 3), "s",
                   target=("<=", 0.5)),
            Figure(f"{label}: peak RSS, cold", round(cold["peak_rss_mb"]), "MiB",
                   note=_rss_note(cold)),
            Figure(f"{label}: peak RSS, cached", round(cached["peak_rss_mb"]), "MiB"),
            Figure("collate, batch of 64", round(cached["collate_us"]), "µs",
                   note="vectorised WordTokenizer.collate, training split"),
            Figure("padded positions, random batches", round(100 * cached["padding_random"], 1),
                   "%", note="source + target, each padded to its longest in the batch"),
            Figure("padded positions, bucket_by_length", round(100 * cached["padding_bucketed"], 1),
                   "%"),
        ]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures
