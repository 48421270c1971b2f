"""A real run's summary: metrics.json and the console describe the best checkpoint, labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialoglab.experiment.train import train
from tests.conftest import TINY_GRU
from tests.helpers.synthetic_cornell import write_small_cornell


def test_metrics_json_holds_the_best_checkpoints_metrics(make_cfg, tmp_path: Path, capsys) -> None:
    write_small_cornell(tmp_path / "corpus", 8, 6)
    cfg = make_cfg(
        "train",
        ["data=cornell", f"data.path={tmp_path / 'corpus'}", "data.max_length=12", *TINY_GRU,
         "trainer.max_epochs=4", "model.optimizer.lr=0.3", "sample_replies=0"],
        output_dir=tmp_path / "run",
    )  # fmt: skip
    returned = train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert summary["checkpoint"] == "best"
    epoch = summary["checkpoint_epoch"]
    assert Path(summary["best_checkpoint"]).name == f"epoch_{epoch:03d}.ckpt"
    # the best checkpoint's own validation, beside its test scores
    assert metrics["val/ppl"] == pytest.approx(metrics["val/ppl_best"])
    assert "test/bleu" in metrics and "test/entropy_4" in metrics
    # lr=0.3 diverges after the first epoch: the last epoch's metrics appear only labelled so
    assert epoch < 3 and summary["last_epoch"]["epoch"] == 3
    last = summary["last_epoch"]["metrics"]
    assert (
        last["val/ppl"] > metrics["val/ppl"] and returned["last_epoch/val/ppl"] == last["val/ppl"]
    )
    out = " ".join(capsys.readouterr().out.split())  # the table title may wrap
    assert f"metrics of the best checkpoint (epoch {epoch})" in out
