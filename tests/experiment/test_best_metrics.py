"""The run summary shows one checkpoint's metrics (the best), the last epoch's only labelled so."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from dialoglab.experiment.best_metrics import EpochMetrics, label_wandb_summary, run_metrics
from dialoglab.experiment.sweep_report import read_csv_log

EPOCHS = [  # (val/ppl, val/bleu) per epoch: epoch 1 is the best, epoch 3 the last
    (9.0, 1.0),
    (7.0, 2.0),
    (7.0, 4.0),  # as good as epoch 1: ModelCheckpoint keeps the first
    (8.0, 5.0),
]


def recorded() -> EpochMetrics:
    """EpochMetrics fed as Lightning does: after a sanity check, once per validation."""
    callback = EpochMetrics()
    trainer = SimpleNamespace(sanity_checking=True, current_epoch=0, global_step=0)
    trainer.callback_metrics = {"val/ppl": torch.tensor(99.0)}
    callback.on_validation_end(trainer, None)  # the sanity check is not an epoch
    for epoch, (ppl, bleu) in enumerate(EPOCHS):
        trainer.sanity_checking, trainer.current_epoch, trainer.global_step = False, epoch, epoch
        trainer.callback_metrics = {
            "val/ppl": torch.tensor(ppl),
            "val/bleu": torch.tensor(bleu),
            "train/loss": torch.tensor(1.0),
        }
        callback.on_validation_end(trainer, None)
    return callback


def test_best_checkpoint_metrics_not_the_last_epochs(tmp_path: Path) -> None:
    epochs = recorded()
    assert [r["epoch"] for r in epochs.records] == [0, 1, 2, 3]
    restored = EpochMetrics()  # what a resumed run gets back from its checkpoint
    restored.load_state_dict(epochs.state_dict())

    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/ppl", mode="min")
    checkpoint.best_model_score = torch.tensor(7.0)
    trainer = SimpleNamespace(callback_metrics={"test/bleu": torch.tensor(3.0)})
    after_fit = {"val/ppl": 8.0, "val/bleu": 5.0, "val/ppl_best": 7.0, "train/loss": 0.5}
    run = run_metrics(trainer, [checkpoint, restored], after_fit, str(tmp_path / "best.ckpt"))

    assert run.checkpoint == "best" and run.epoch == 1
    assert run.metrics == {
        "val/ppl": 7.0, "val/bleu": 2.0, "val/ppl_best": 7.0, "train/loss": 0.5, "test/bleu": 3.0,
    }  # fmt: skip
    assert run.last_epoch == {"epoch": 3, "metrics": {"val/ppl": 8.0, "val/bleu": 5.0}}
    flat = run.flat()
    assert flat["val/bleu"] == 2.0 and flat["last_epoch/val/bleu"] == 5.0
    assert run.label() == "best checkpoint (epoch 1)"


def test_without_a_best_checkpoint_the_metrics_are_labelled_last(tmp_path: Path) -> None:
    trainer = SimpleNamespace(callback_metrics={"test/bleu": torch.tensor(3.0)})
    after_fit = {"val/ppl": 8.0, "val/bleu": 5.0}
    run = run_metrics(trainer, [recorded()], after_fit, best_path="")
    assert run.checkpoint == "last" and run.epoch == 3 and not run.last_epoch
    assert run.metrics == {**after_fit, "test/bleu": 3.0}


def test_wandb_summary_holds_the_best_checkpoints_metrics(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/ppl", mode="min")
    checkpoint.best_model_score = torch.tensor(7.0)
    trainer = SimpleNamespace(callback_metrics={})
    run = run_metrics(trainer, [checkpoint, recorded()], {"val/bleu": 5.0}, "best.ckpt")
    logger = MagicMock(spec=WandbLogger)
    summary: dict = {}
    logger.experiment.summary = summary
    label_wandb_summary([logger], run)
    assert summary["val/bleu"] == 2.0 and summary["last_epoch/val/bleu"] == 5.0
    assert summary["checkpoint"] == "best" and summary["checkpoint_epoch"] == 1


def test_report_reads_the_best_epoch_from_the_csv_log(tmp_path: Path) -> None:
    rows = ["epoch,step,train/loss,val/ppl,val/bleu,test/bleu"]
    for epoch, (ppl, bleu) in enumerate(EPOCHS):
        rows += [
            f"{epoch},{epoch * 10 + 5},{2.0 - epoch / 10},,,",
            f"{epoch},{epoch * 10 + 9},,{ppl},{bleu},",
        ]
    rows.append("3,40,,,,3.5")  # the test of the best checkpoint, logged after training
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    curve, metrics = read_csv_log(path)
    assert curve == [(0, 9.0), (1, 7.0), (2, 7.0), (3, 8.0)]
    assert metrics["val/ppl"] == 7.0 and metrics["val/bleu"] == 2.0
    assert metrics["last_epoch/val/bleu"] == 5.0 and metrics["test/bleu"] == 3.5
    assert metrics["train/loss"] == pytest.approx(1.7)
