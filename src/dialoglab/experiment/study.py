"""The Optuna study of a sweep: its storage, pruner, trials' bookkeeping and result files.

The study lives in Optuna's RDB storage (by default `sqlite:///<sweep dir>/optuna.sqlite`), so
`optuna-dashboard` and `dialoglab.report` read it while it runs, and a sweep started again
continues it. Each training job learns which trial it runs from the config key `sweep_trial`
(study name, storage URL, trial number), which the sweeper sets per job; the pruning callback
(`dialoglab.experiment.pruning`) opens that trial to report to it. The pruner is stored with the
study (a user attribute), so every job prunes with the sweep's pruner.
"""

from __future__ import annotations

import csv
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from dialoglab.errors import ConfigError, DialoglabError

STORAGE_FILE = "optuna.sqlite"
RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"
CONFIG_KEY = "sweep_trial"  # the job's trial: study_name, storage, number

# user attributes of trials and of the study
FAILURE = "failure"  # why a trial failed
INTERRUPTED = "interrupted"  # the sweep was killed while the trial ran: run again, not counted
PRUNED_AT = "pruned_at_epoch"  # set by the pruning callback when the pruner stops the run
OWNER = "sweeper"  # host:pid of the sweep process that asked the trial
OUTPUT_DIR = "output_dir"
PRUNER = "dialoglab.pruner"  # study attribute: the pruner's config

PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"_target_": "optuna.pruners.NopPruner"},
    "median": {"_target_": "optuna.pruners.MedianPruner"},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner"},
}


class SweepError(DialoglabError):
    """The sweep cannot go on (too many failed trials, a study of another kind, bad settings)."""


# -- storage ------------------------------------------------------------------------------------
def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """`hydra.sweeper.storage`, or SQLite in the sweep directory when it is null."""
    if storage:
        return str(storage)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(sweep_dir / STORAGE_FILE).resolve()}"


def shown_url(url: str) -> str:
    """The storage URL for logs and reports, its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: say nothing of it
        return "<storage URL>"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url`; SQLite waits up to a minute for a lock (parallel trials)."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:
        raise SweepError(
            f"hydra.sweeper.storage={shown_url(url)}: cannot open it as an Optuna storage "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


# -- pruner ---------------------------------------------------------------------------------------
def pruner_spec(value: Any) -> dict[str, Any]:
    """`hydra.sweeper.pruner` as a config: a name (median, hyperband, none; null = none) or a
    mapping with `_target_` (any Optuna pruner, e.g. optuna.pruners.PercentilePruner)."""
    if value is None or isinstance(value, str):
        name = "none" if value is None else value.strip().lower()
        if name not in PRUNERS:
            raise ConfigError(
                f"hydra.sweeper.pruner={value}: use one of {', '.join(PRUNERS)}, or a pruner "
                "config with _target_, e.g. hydra.sweeper.pruner="
                "'{_target_:optuna.pruners.PercentilePruner,percentile:25.0}'"
            )
        return dict(PRUNERS[name])
    spec = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"hydra.sweeper.pruner={value}: a pruner config needs a _target_")
    return dict(spec)


def make_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    pruner = instantiate(dict(spec or PRUNERS["none"]))
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"hydra.sweeper.pruner: {spec.get('_target_')} is not an Optuna pruner")
    return pruner


# -- the trial a job runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRef:
    """Which trial of which study a training job runs (the config key `sweep_trial`)."""

    study_name: str
    storage: str
    number: int

    def overrides(self) -> list[str]:
        from hydra.core.override_parser.types import Transformer

        return [
            f"++{CONFIG_KEY}.study_name={Transformer.str(self.study_name)}",
            f"++{CONFIG_KEY}.storage={Transformer.str(self.storage)}",
            f"++{CONFIG_KEY}.number={self.number}",
        ]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrialRef | None:
        node = OmegaConf.select(cfg, CONFIG_KEY, default=None)
        if not node:
            return None
        return cls(str(node.study_name), str(node.storage), int(node.number))

    def open(self) -> optuna.trial.Trial:
        """The trial, to report to; its study has the sweep's pruner."""
        storage = open_storage(self.storage)
        study_id = storage.get_study_id_from_name(self.study_name)
        pruner = make_pruner(storage.get_study_user_attrs(study_id).get(PRUNER))
        study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(),  # a job never samples
        )
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        return optuna.trial.Trial(study, trial_id)


# -- bookkeeping ----------------------------------------------------------------------------------
def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead(owner: str | None) -> bool:
    """Whether the sweep process `host:pid` is gone (unknown owner: gone; other host: alive)."""
    host, _, pid = (owner or "").rpartition(":")
    if not host or not pid.isdigit():
        return True
    if host != socket.gethostname():
        return False
    if int(pid) == os.getpid():  # a new process that reuses a killed sweep's pid
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Record as FAIL (interrupted) the RUNNING trials of a sweep process that was killed on this
    machine; they are run again. Trials of live sweeps (another machine, another shell) stay."""
    lost = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if _dead(t.user_attrs.get(OWNER))
    ]
    for number in lost:
        attrs = {INTERRUPTED: True, FAILURE: "interrupted: the sweep stopped while it ran"}
        set_user_attrs(study, storage, number, attrs)
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return lost


def set_user_attrs(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    number: int,
    attrs: Mapping[str, Any],
) -> None:
    """Set user attributes of trial `number` (one this process holds no Trial object of)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def counted(trial: FrozenTrial) -> bool:
    """Trials that count towards n_trials: finished ones, except those a kill interrupted."""
    return trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED)


# -- result files ---------------------------------------------------------------------------------
def write_results(study: optuna.Study, sweep_dir: Path) -> dict[str, Any]:
    """`optimization_results.yaml` (counts, best trial) and `trials.csv` in the sweep dir."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "n_complete": states.count(TrialState.COMPLETE),
        "n_pruned": states.count(TrialState.PRUNED),
        "n_failed": states.count(TrialState.FAIL),
    }
    if results["n_complete"] and len(study.directions) == 1:
        best = study.best_trial
        results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
    elif results["n_complete"]:
        results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)

    names = sorted({k for t in trials for k in t.params})
    with (sweep_dir / TRIALS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", *names, PRUNED_AT, FAILURE])
        for t in trials:
            value = t.values[0] if t.values and math.isfinite(t.values[0]) else ""
            cells = [t.number, t.state.name, value, *(t.params.get(k, "") for k in names)]
            writer.writerow(
                [*cells, t.user_attrs.get(PRUNED_AT, ""), t.user_attrs.get(FAILURE, "")]
            )
    return results
