"""Callbacks dialoglab adds to Lightning's: what to do with a non-finite loss."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback


class NonFiniteLoss(Callback):
    """`skip=false` (default): a NaN/inf training loss stops the run with a message naming the step
    (checkpoints saved before it are kept). `skip=true`: such batches are skipped (no backward, no
    optimizer step), counted and logged as `train/skipped_nonfinite`."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        pl_module.skip_nonfinite = self.skip
