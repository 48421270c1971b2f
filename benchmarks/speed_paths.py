"""Each speed path of `dialoglab.accel` on and off, on figures a user feels.

Training: mean epoch time (epochs after the first) of `experiment=cornell_gru` on the shared
Cornell slice, fp32 and bf16-mixed, and GPT-2 scratch training tokens/s on the same slice, each
through `train.py` in a child process with `accel=auto` and `accel=none`.
On the CPU `accel=none` differs from `accel=auto` in training by `fused_gru` alone. Reply
latency with the accel paths on and off is the `replies` benchmark. A path stays only if it
saves >= 10 % of a training figure or keeps a reply latency within its target (docs/speed.md).

    python -m benchmarks --only speed_paths        # or: python -m benchmarks.speed_paths
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO.parent / "shared" / "data" / "cornell-subset"


class EpochTimer(Callback):
    """Writes each training epoch's seconds and reply-token count to `path` (JSON lines)."""

    def __init__(self, path: str) -> None:
        self.path, self.start, self.tokens = Path(path), 0.0, 0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.start, self.tokens = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.tokens += int(pl_module.count_tokens(batch))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        row = {"seconds": time.perf_counter() - self.start, "tokens": self.tokens}
        with self.path.open("a") as out:
            out.write(json.dumps(row) + "\n")


def train_epochs(overrides: list[str], epochs: int) -> list[dict[str, float]]:
    """Run train.py with `overrides` for `epochs` epochs; the per-epoch rows after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "epochs.jsonl"
        command = [
            sys.executable, str(REPO / "train.py"), f"paths.root_dir={tmp}",
            f"data.path={SLICE}", f"trainer.max_epochs={epochs}", "test=false", "logger=csv",
            "sample_replies=0", "callbacks.rich_progress_bar=null",
            "+callbacks.epoch_timer._target_=benchmarks.speed_paths.EpochTimer",
            f"+callbacks.epoch_timer.path={rows}", *overrides,
        ]  # fmt: skip
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
        return [json.loads(line) for line in rows.read_text().splitlines()[1:]]


TRAINING = {
    "cornell_gru epoch s (fp32)": ["experiment=cornell_gru"],
    "cornell_gru epoch s (bf16-mixed)": ["experiment=cornell_gru", "trainer.precision=bf16-mixed"],
    "GPT-2 scratch tokens/s": [
        "model=gpt2_scratch",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=2",
        "model.val_generate=8",
    ],
}
VARIANTS = {"auto": [], "none": ["accel=none"]}


def training_rows(epochs: int) -> list[dict[str, Any]]:
    """One row per (figure, variant): the figure's value, mean over the timed epochs."""
    rows = []
    for figure, overrides in TRAINING.items():
        for variant, switch in VARIANTS.items():
            epochs_run = train_epochs([*overrides, *switch], epochs)
            seconds = sum(r["seconds"] for r in epochs_run) / len(epochs_run)
            tokens = sum(r["tokens"] for r in epochs_run) / len(epochs_run)
            value = tokens / seconds if "tokens/s" in figure else seconds
            rows.append({"figure": figure, "variant": variant, "value": round(value, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def run(quick: bool = False) -> list[Any]:
    """`python -m benchmarks --only speed_paths` entry: the rows as Figures."""
    from benchmarks.common import Figure

    rows = training_rows(2 if quick else 4)
    return [Figure(f"{r['figure']} [accel={r['variant']}]", r["value"], "") for r in rows]


if __name__ == "__main__":
    print(json.dumps(training_rows(4), indent=1))
