"""Learning-rate schedules stepped once per optimizer step (`interval: step` in the config)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from dialoglab.errors import ConfigError

DECAYS = ("linear", "cosine", "constant")


def warmup_decay(
    optimizer: torch.optim.Optimizer,
    num_training_steps: int,
    warmup_steps: int | None = None,
    warmup_ratio: float = 0.0,
    decay: str = "linear",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up to the optimizer's lr (step k < w at lr * (k+1) / (w+1)), then linear or
    cosine decay to `min_lr_ratio * lr` at `num_training_steps` (or a constant lr).

    `warmup_steps` wins over `warmup_ratio` (a fraction of `num_training_steps`), so presets need
    not know the run length. `num_training_steps` is filled in by `DialogueModule`.
    """
    if decay not in DECAYS:
        raise ConfigError(f"model.scheduler.decay must be one of {DECAYS}, got {decay!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"model.scheduler.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    total = max(1, int(num_training_steps))
    warmup = int(warmup_steps) if warmup_steps is not None else round(warmup_ratio * total)
    warmup = max(0, min(warmup, total - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return LambdaLR(optimizer, factor)
