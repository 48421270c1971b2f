"""Optuna sweeps through Hydra: ask trials, launch them as jobs, tell Optuna how each ended.

Used through the Hydra sweeper `hydra/sweeper=dialoglab_optuna` (the plugin in
`hydra_plugins/dialoglab_optuna_sweeper`), which the `hparams_search=*` presets select.

- The study is in Optuna's RDB storage (SQLite in the sweep directory unless
  `hydra.sweeper.storage` names another URL). The same command continues it: trials a killed
  sweep left running are recorded as FAIL (interrupted) and run again, and the sweep runs what
  is missing to reach `n_trials` finished trials (a larger `n_trials` extends a finished study).
- Trials are asked in batches of `n_jobs` and launched together (hydra/launcher=local runs them
  in parallel); each job gets its trial in the config key `sweep_trial`, and its run directory is
  `<sweep dir>/<trial number>`.
- A job that raises, or whose objective is missing or not finite, is told as FAIL with the reason
  (user attribute `failure`); the sweep goes on unless more than `max_failure_rate` of a batch
  fails. A job the pruner stopped (`dialoglab.experiment.pruning`) is told as PRUNED.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dialoglab.experiment.runner import describe_error
from dialoglab.experiment.search_space import SearchSpace
from dialoglab.experiment.study import (
    FAILURE,
    OUTPUT_DIR,
    OWNER,
    PRUNED_AT,
    PRUNER,
    SweepError,
    TrialRef,
    counted,
    open_storage,
    pruner_spec,
    recover_interrupted,
    shown_url,
    storage_url,
    this_process,
    write_results,
)

log = logging.getLogger(__name__)


def trial_outcome(ret: JobReturn, n_objectives: int) -> tuple[list[float] | None, str]:
    """(objective values, "") for a usable trial, (None, reason) for a failed one."""
    if ret.status == JobStatus.FAILED:
        return None, describe_error(ret._return_value)
    try:
        value = ret.return_value
    except Exception as err:  # a launcher that reports failure only through return_value
        return None, describe_error(err)
    if value is None:
        return None, "the run returned no objective (is `optimized_metric` a metric it logs?)"
    raw = value if n_objectives > 1 else [value]
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None, f"the objective is not a number: {value!r}"
    if len(values) != n_objectives:
        return None, f"expected {n_objectives} objective values, got {len(values)}"
    if not all(math.isfinite(v) for v in values):
        return None, f"the objective is {values[0] if n_objectives == 1 else values} (a NaN loss?)"
    return values, ""


def consecutive_runs(trials: Sequence[optuna.Trial]) -> list[list[optuna.Trial]]:
    """Trials split where their numbers jump (another process asked in between): each run is
    launched with job number = trial number, so run directories never collide."""
    runs: list[list[optuna.Trial]] = []
    for trial in trials:
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


class OptunaSweep:
    """The sweep loop behind `DialoglabOptunaSweeper` (settings: see its config)."""

    def __init__(
        self,
        *,
        sampler: Mapping[str, Any] | None,
        pruner: Any,
        direction: str | Sequence[str],
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: Mapping[str, str] | None,
    ) -> None:
        self.sampler_conf = sampler
        self.pruner_conf = pruner_spec(pruner)
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- study ---------------------------------------------------------------------------------
    def make_sampler(self, space: SearchSpace) -> optuna.samplers.BaseSampler:
        conf = self.sampler_conf
        if isinstance(conf, DictConfig):
            conf = OmegaConf.to_container(conf, resolve=True)  # type: ignore[assignment]
        conf = dict(conf or {"_target_": "optuna.samplers.TPESampler"})
        if str(conf.get("_target_", "")).endswith("GridSampler"):
            grid = space.grid()
            conf["search_space"] = grid
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        return instantiate(conf, _convert_="all")

    def open_study(
        self, storage: optuna.storages.BaseStorage, url: str, space: SearchSpace
    ) -> optuna.Study:
        """The study (created, or loaded to continue it), its pruner recorded for the jobs."""
        assert self.config is not None
        if len(self.directions) > 1 and self.pruner_conf["_target_"] != "optuna.pruners.NopPruner":
            raise SweepError("hydra.sweeper.pruner: Optuna prunes single-objective studies only")
        study = optuna.create_study(
            study_name=self.study_name or Path(str(self.config.hydra.sweep.dir)).name,
            storage=storage,
            sampler=self.make_sampler(space),
            directions=self.directions,
            load_if_exists=True,
        )
        found = [d.name.lower() for d in study.directions]
        if found != [d.lower() for d in self.directions]:
            raise SweepError(
                f"study {study.study_name} in {shown_url(url)} was created to {found}, not "
                f"{self.directions}: set hydra.sweeper.direction to match, or start a new study "
                "with hydra.sweeper.study_name=NAME"
            )
        study.set_user_attr(PRUNER, self.pruner_conf)  # what the jobs prune with
        return study

    def to_go(self, study: optuna.Study) -> int:
        """Trials to ask now: up to n_jobs, so that finished + running reach n_trials."""
        trials = study.get_trials(deepcopy=False)
        busy = sum(counted(t) or t.state == TrialState.RUNNING for t in trials)
        return max(0, min(self.n_jobs, self.n_trials - busy))

    # -- the loop ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        space = SearchSpace.parse(self.params, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        url = storage_url(self.storage, sweep_dir)
        storage = open_storage(url)
        study = self.open_study(storage, url, space)
        lost = recover_interrupted(study, storage)
        if lost:
            log.warning("trials %s were interrupted by a kill: recorded as failed, run again", lost)
        done = sum(counted(t) for t in study.get_trials(deepcopy=False))
        log.info(
            "study %s (%s): %d of n_trials=%d done, %d to run (sampler %s, pruner %s)",
            study.study_name,
            shown_url(url),
            done,
            self.n_trials,
            max(0, self.n_trials - done),
            type(study.sampler).__name__,
            self.pruner_conf["_target_"].rsplit(".", 1)[-1],
        )
        while (batch := self.to_go(study)) > 0:
            trials = [study.ask(space.distributions) for _ in range(batch)]
            self.run_batch(study, url, space, trials)
            write_results(study, sweep_dir)
        results = write_results(study, sweep_dir)
        if "best_trial" in results:
            log.info(
                "best trial %d: %s = %s",
                results["best_trial"],
                results["best_params"],
                results["best_value"],
            )

    def run_batch(
        self, study: optuna.Study, url: str, space: SearchSpace, trials: list[optuna.Trial]
    ) -> None:
        """Launch the trials' jobs, tell Optuna how each ended; stop if too many failed."""
        for trial in trials:
            trial.set_user_attr(OWNER, this_process())
        returns: list[JobReturn] = []
        for run in consecutive_runs(trials):
            overrides = [
                space.job_overrides(t.params, TrialRef(study.study_name, url, t.number).overrides())
                for t in run
            ]
            try:
                returns += self.launcher.launch(overrides, initial_job_idx=run[0].number)
            except (
                Exception
            ) as err:  # the launcher itself failed (e.g. a config that won't compose)
                for trial in trials[len(returns) :]:
                    trial.set_user_attr(FAILURE, describe_error(err))
                    study.tell(trial, state=TrialState.FAIL)
                raise
        latest = {t.number: t for t in study.get_trials(deepcopy=False)}
        failures = 0
        for trial, ret in zip(trials, returns, strict=True):
            failures += not self.tell(study, trial, ret, latest[trial.number].user_attrs)
        if failures / len(returns) > self.max_failure_rate:
            raise SweepError(
                f"{failures} of {len(returns)} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}; see the error.txt "
                f"of each failed run under {self.config.hydra.sweep.dir if self.config else ''}"
            )

    def tell(
        self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, attrs: Mapping[str, Any]
    ) -> bool:
        """Tell Optuna how the job of `trial` ended (its latest user `attrs`); False if failed."""
        values, reason = trial_outcome(ret, len(self.directions))
        if ret.hydra_cfg is not None:
            trial.set_user_attr(OUTPUT_DIR, str(ret.hydra_cfg.hydra.runtime.output_dir))
        if values is None:
            trial.set_user_attr(FAILURE, reason)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed, the sweep goes on: %s", trial.number, reason)
            return False
        if PRUNED_AT in attrs:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d was pruned after epoch %s", trial.number, attrs[PRUNED_AT])
            return True
        try:
            study.tell(trial, values=values)
        except RuntimeError as err:  # GridSampler stops the study once the grid is done
            if "Study.stop" not in str(err):
                raise
        return True
