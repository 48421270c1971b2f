"""Report a sweep trial's objective every epoch and stop the run when the study's pruner says so.

A job of an Optuna sweep carries its trial in the config key `sweep_trial` (set by the sweeper);
`sweep_callbacks(cfg)` then adds `TrialPruning`. Under DDP every rank trains the same trial (rank
0's resolved config), but only global rank 0 opens the study: after each validation it reports
`optimized_metric` at step = epoch and asks the pruner, then broadcasts the decision, so all
ranks stop after the same epoch. The trial is marked with the epoch it was pruned at; the sweeper
tells Optuna PRUNED when the job returns. Each rank writes `<run dir>/trial/rank_<r>.json`: the
trial number, the values it trained the trial's parameters with, the epochs it validated and
whether the pruner stopped it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback, LightningModule, Trainer

from dialoglab.errors import TrainingError

if TYPE_CHECKING:
    import optuna

    from dialoglab.experiment.study import TrialRef

log = logging.getLogger(__name__)

RECORD_DIR = "trial"


class TrialPruning(Callback):
    """Reports `monitor` to the sweep's trial after every validation epoch (global rank 0) and
    stops every rank at once when the trial is pruned."""

    def __init__(self, trial: TrialRef, monitor: str, cfg: DictConfig) -> None:
        self.trial_ref = trial
        self.monitor = monitor
        self.cfg = cfg
        self.trial: optuna.trial.Trial | None = None
        self.param_names: list[str] = []
        self.epochs: list[int] = []
        self.pruned_at: int | None = None
        self.warned = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Rank 0 opens the trial; every rank learns its parameter names, or rank 0's error (so
        that no rank waits for a rank 0 that failed)."""
        found: tuple[list[str], str] = ([], "")
        if trainer.is_global_zero:
            try:
                self.trial = self.trial_ref.open()
                found = (sorted(self.trial.params), "")
            except Exception as err:
                found = ([], f"trial {self.trial_ref.number} of study "
                             f"{self.trial_ref.study_name}: {type(err).__name__}: {err}")  # fmt: skip
        names, error = trainer.strategy.broadcast(found, src=0)
        if error:
            raise TrainingError(f"cannot report to the sweep's {error}")
        self.param_names = list(names)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        epoch = trainer.current_epoch
        prune = False
        if trainer.is_global_zero:
            try:
                prune = self.report(trainer, epoch)
            except Exception as err:  # rank 0 must reach the broadcast the other ranks wait in
                log.warning("trial %d: reporting epoch %d failed (%s); the run goes on",
                            self.trial_ref.number, epoch, err)  # fmt: skip
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        self.epochs.append(epoch)
        if prune:
            self.pruned_at = epoch
            trainer.should_stop = True

    def report(self, trainer: Trainer, epoch: int) -> bool:
        """Rank 0: report the epoch's objective; True (and the trial marked) if it is pruned."""
        from dialoglab.experiment.study import PRUNED_AT

        assert self.trial is not None
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self.warned:
                log.warning("%s is not logged: trial %d reports nothing to its pruner",
                            self.monitor, self.trial_ref.number)  # fmt: skip
                self.warned = True
            return False
        self.trial.report(float(value), step=epoch)
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr(PRUNED_AT, epoch)
        log.info("trial %d pruned after epoch %d (%s=%.4f)", self.trial_ref.number, epoch,
                 self.monitor, float(value))  # fmt: skip
        return True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = Path(str(OmegaConf.select(self.cfg, "paths.output_dir", default="."))) / RECORD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        params = {}
        for name in self.param_names:
            value = OmegaConf.select(self.cfg, name.lstrip("+~"), default=None)
            params[name] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        record: dict[str, Any] = {
            "trial": self.trial_ref.number,
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "params": params,
            "epochs_validated": self.epochs,
            "pruned_at_epoch": self.pruned_at,
        }
        path = folder / f"rank_{trainer.global_rank}.json"
        path.write_text(json.dumps(record, indent=2, default=str))


def sweep_callbacks(cfg: DictConfig) -> list[Callback]:
    """[TrialPruning] for a job of an Optuna sweep (config key `sweep_trial`), else []."""
    if not OmegaConf.select(cfg, "sweep_trial", default=None):
        return []
    from dialoglab.experiment.study import TrialRef

    trial = TrialRef.from_config(cfg)
    assert trial is not None
    return [TrialPruning(trial, str(cfg.get("optimized_metric") or "val/ppl_best"), cfg)]
