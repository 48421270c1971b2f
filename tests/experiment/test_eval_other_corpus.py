"""eval.py scores a checkpoint on every dialogue of another corpus (`data.split=all`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dialoglab.experiment.evaluate import evaluate
from dialoglab.experiment.train import train
from tests.conftest import TINY_GRU
from tests.helpers.synthetic_cornell import write_small_cornell

LIMITS = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "sample_replies=0"]


def test_eval_scores_every_dialogue_of_another_corpus(make_cfg, tmp_path: Path) -> None:
    write_small_cornell(tmp_path / "ours", 6, 6)
    other = write_small_cornell(tmp_path / "other", 2, 5, word="other", restart_ids=True)
    train_cfg = make_cfg(
        "train",
        ["data=cornell", f"data.path={tmp_path / 'ours'}", "data.max_length=12", *TINY_GRU,
         *LIMITS],
        output_dir=tmp_path / "train_run",
    )  # fmt: skip
    train(train_cfg)
    best = json.loads((tmp_path / "train_run" / "metrics.json").read_text())["best_checkpoint"]

    # `data.path` and `data.split` are eval settings: no `+` needed
    eval_cfg = make_cfg(
        "eval",
        [f"ckpt_path={best}", f"data.path={tmp_path / 'other'}", "data.split=all"],
        output_dir=tmp_path / "eval_run",
    )
    metrics = evaluate(eval_cfg)
    saved = json.loads((tmp_path / "eval_run" / "metrics.json").read_text())
    assert saved["data"] == {
        "path": str(tmp_path / "other"),
        "split": [0.0, 0.0, 1.0],
        "examples": other["conversations"] * 2,  # every reply of every conversation
    }
    assert math.isfinite(metrics["test/ppl"]) and "test/entropy_4" in metrics
