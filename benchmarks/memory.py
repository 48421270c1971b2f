"""Memory: peak RSS and wall time of `python train.py` for one gru_attn epoch on the Cornell slice.

train.py runs as a user runs it (model=gru_attn at its defaults, the cornell data config on the
slice), with validation, testing, sample replies, checkpoints and loggers off and its outputs in a
temporary folder. The peak RSS (ru_maxrss of the finished child) covers imports, data and
training; the wall time includes Python's start and the imports.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time

from benchmarks.common import CORNELL_SLICE, REPO_ROOT, Figure, bench_env, peak_rss_mb


def run(quick: bool = False) -> list[Figure]:
    if not (CORNELL_SLICE / "movie_lines.txt").is_file():
        return [
            Figure("train.py epoch: peak RSS", None, note=f"no Cornell slice at {CORNELL_SLICE}")
        ]
    with tempfile.TemporaryDirectory(prefix="dialoglab-bench-memory-") as tmp:
        overrides = [
            f"data.path={CORNELL_SLICE}",
            "data.reader.download=false",
            f"data.cache_dir={tmp}/cache",
            f"paths.log_dir={tmp}",
            "logger=csv",
            "callbacks=none",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
            "trainer.accelerator=cpu",
            "test=false",
            "sample_replies=0",
        ]
        if quick:
            overrides += ["model.net.hidden_size=32", "trainer.limit_train_batches=5"]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "train.py", *overrides],
            cwd=REPO_ROOT,
            env=bench_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    what = "model=gru_attn defaults" + (" (hidden 32, 5 steps: quick)" if quick else "")
    return [
        Figure("train.py epoch on the slice: peak RSS", round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
               "MiB", note=what + "; imports, data and training"),
        Figure("train.py epoch on the slice: wall time", round(seconds, 1), "s",
               note="Python start and imports included"),
    ]  # fmt: skip
