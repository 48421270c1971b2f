"""The metrics of one checkpoint: the end-of-run summary describes the best checkpoint (the one
ModelCheckpoint kept and `trainer.test` scored), and shows the last epoch's only labelled so.

Lightning's `callback_metrics` after `fit` hold the last validation's values, which beside a
best checkpoint's test scores and `val/ppl_best` would mix two models. `EpochMetrics` keeps
every validation's `val/*`; `run_metrics` picks the record of the best checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytorch_lightning import Callback, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

LAST = "last_epoch/"  # prefix of the last validation's metrics wherever they are shown


class EpochMetrics(Callback):
    """Keeps each validation's `val/*` metrics with its epoch and step (saved in checkpoints,
    so a resumed run still knows its best epoch's metrics)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        values = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and k != "val/ppl_best"  # a run's, not an epoch's
        }
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": values}
        self.records = [r for r in self.records if r["step"] != trainer.global_step] + [record]

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merged by step with what this run already recorded: `trainer.test(ckpt_path=best)`
        restores callback states from the best checkpoint, which knows no later epoch."""
        by_step = {r["step"]: r for r in state_dict.get("records", [])}
        by_step.update({r["step"]: r for r in self.records})
        self.records = [by_step[step] for step in sorted(by_step)]


@dataclass
class RunMetrics:
    """What the summary shows: `metrics` of `checkpoint` ("best" or "last"), its epoch, and the
    last validation's metrics (`last_epoch`, empty when that is the best checkpoint itself)."""

    metrics: dict[str, float]
    checkpoint: str
    epoch: int | None = None
    last_epoch: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """`metrics`, plus the last epoch's under `last_epoch/` (what train() returns)."""
        last = {f"{LAST}{k}": v for k, v in self.last_epoch.get("metrics", {}).items()}
        return {**self.metrics, **last}

    def label(self) -> str:
        where = f" (epoch {self.epoch})" if self.epoch is not None else ""
        return f"{self.checkpoint} checkpoint{where}"


def best_record(checkpoint: ModelCheckpoint | None, records: list[dict[str, Any]]) -> Any:
    """The validation record whose monitored value is the checkpoint's best score (the first of
    equals, as ModelCheckpoint keeps the first); None without a monitored best."""
    if checkpoint is None or checkpoint.monitor is None or checkpoint.best_model_score is None:
        return None
    best = float(checkpoint.best_model_score)
    scored = [r for r in records if checkpoint.monitor in r["metrics"]]
    if not scored or not math.isfinite(best):
        return None
    return min(scored, key=lambda r: abs(r["metrics"][checkpoint.monitor] - best))


def run_metrics(
    trainer: Trainer, callbacks: list[Callback], after_fit: dict[str, float], best_path: str
) -> RunMetrics:
    """The run's metrics, labelled: the best checkpoint's when there is one (`best_path`; its
    val/* from its own validation, test/* from `trainer.test` of it), else the last epoch's
    (`checkpoint="last"`), or those of a checkpoint that was only tested (`"given"`). `train/*`
    keep their names: they describe the training run, not a checkpoint."""
    records = next((c.records for c in callbacks if isinstance(c, EpochMetrics)), [])
    model_checkpoint = next(
        (c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    tests = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    tests = {k: float(v) for k, v in tests.items()}
    last = records[-1] if records else None
    best = best_record(model_checkpoint, records) if best_path else None
    if best is None:
        epoch = last["epoch"] if last else None
        return RunMetrics({**after_fit, **tests}, "last" if last else "given", epoch)
    kept = {k: v for k, v in after_fit.items() if not k.startswith("val/") or k == "val/ppl_best"}
    metrics = {**best["metrics"], **kept, **tests}
    last_epoch = {} if last is best else {"epoch": last["epoch"], "metrics": last["metrics"]}
    return RunMetrics(metrics, "best", best["epoch"], last_epoch)


def label_wandb_summary(loggers: list[Any], run: RunMetrics) -> None:
    """W&B's run summary holds each key's last logged value; make it the chosen checkpoint's,
    with the last epoch's under `last_epoch/` and the checkpoint named."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            summary = logger.experiment.summary
            summary.update(run.flat())
            summary.update({"checkpoint": run.checkpoint, "checkpoint_epoch": run.epoch})
