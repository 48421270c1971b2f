"""Each speed path of `dialoglab.accel` on and off, on training figures a user feels.

`experiment=cornell_gru` epoch time (fp32 and bf16-mixed) and GPT-2 scratch tokens/s on the
Cornell slice, through `train.py` with `accel=auto` and `accel=none`. A path stays only if it saves
>= 10 % of a training figure or keeps a reply latency within its target (docs/speed.md); reply
latency is the `replies` benchmark.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback

from benchmarks.common import Figure, train_py


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
        timer = "+callbacks.epoch_timer._target_=benchmarks.speed_paths.EpochTimer"
        train_py(tmp, [f"trainer.max_epochs={epochs}", "callbacks.rich_progress_bar=null", timer,
                       f"+callbacks.epoch_timer.path={rows}", *overrides])  # fmt: skip
        return [json.loads(line) for line in rows.read_text().splitlines()[1:]]


TRAINING = {
    "cornell_gru epoch s (fp32)": ["experiment=cornell_gru"],
    "cornell_gru epoch s (bf16-mixed)": ["experiment=cornell_gru", "trainer.precision=bf16-mixed"],
    "GPT-2 scratch tokens/s": ["model=gpt2_scratch", "trainer.limit_train_batches=40",
                               "trainer.limit_val_batches=2", "model.val_generate=8"],
}  # fmt: skip
VARIANTS = {"auto": [], "none": ["accel=none"]}


def run(quick: bool = False) -> list[Figure]:
    """Per (figure, variant) the mean over the epochs after the first."""
    figures = []
    for figure, overrides in TRAINING.items():
        for variant, switch in VARIANTS.items():
            epochs = train_epochs([*overrides, *switch], 2 if quick else 4)
            seconds = sum(r["seconds"] for r in epochs) / len(epochs)
            tokens = sum(r["tokens"] for r in epochs) / len(epochs)
            value = tokens / seconds if "tokens/s" in figure else seconds
            figures.append(Figure(f"{figure} [accel={variant}]", round(value, 2)))
            print(figures[-1].name, figures[-1].value, flush=True)
    return figures


if __name__ == "__main__":
    print(json.dumps([figure.to_dict() for figure in run()], indent=1))
