"""The fast settings end to end through train.py's config: bf16-mixed on the CPU, bucketed batches."""

from __future__ import annotations

import math
from pathlib import Path

from dialoglab.experiment.train import train
from tests.conftest import TINY_GRU


def test_bf16_mixed_and_buckets_train_validate_test_and_reply(
    make_cfg, cornell_subset: Path
) -> None:
    cfg = make_cfg(
        "train",
        [
            "debug=fast",
            f"data.path={cornell_subset}",
            "trainer.precision=bf16-mixed",
            "data.bucket_by_length=true",
            *TINY_GRU,
        ],
    )
    metrics = train(cfg)
    for name in ("train/loss", "val/loss", "val/ppl", "val/bleu", "test/ppl"):
        assert name in metrics and math.isfinite(metrics[name]), name
