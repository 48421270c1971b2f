"""Memory: peak RSS and wall time of `python train.py` for one gru_attn epoch on the Cornell slice.

train.py runs as a user runs it (model=gru_attn defaults), with validation, test, sample replies,
checkpoints and loggers off: what one training process costs, imports and data included.
"""

from __future__ import annotations

import resource
import tempfile

from benchmarks.common import CORNELL_SLICE, Figure, peak_rss_mb, train_py


def run(quick: bool = False) -> list[Figure]:
    if not (CORNELL_SLICE / "movie_lines.txt").is_file():
        return [
            Figure("train.py epoch: peak RSS", None, note=f"no Cornell slice at {CORNELL_SLICE}")
        ]
    overrides = ["callbacks=none", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
                 "trainer.accelerator=cpu", "data.reader.download=false"]  # fmt: skip
    if quick:
        overrides += ["model.net.hidden_size=32", "trainer.limit_train_batches=5"]
    with tempfile.TemporaryDirectory(prefix="dialoglab-bench-memory-") as tmp:
        seconds = train_py(tmp, overrides)
    what = "model=gru_attn defaults" + (" (hidden 32, 5 steps: quick)" if quick else "")
    return [
        Figure("train.py epoch on the slice: peak RSS", round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
               "MiB", note=what + "; imports, data and training"),
        Figure("train.py epoch on the slice: wall time", round(seconds, 1), "s",
               note="Python start and imports included"),
    ]  # fmt: skip
