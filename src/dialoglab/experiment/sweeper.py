"""Optuna sweeps that survive failing trials and resume where a killed sweep stopped.

Used through the Hydra sweeper `hydra/sweeper=dialoglab_optuna` (a plugin in
`hydra_plugins/dialoglab_optuna_sweeper`), which the `hparams_search=*` presets select. Compared
with hydra-optuna-sweeper's own loop (whose `OptunaSweeperImpl` this extends):

- A trial whose job raises (a config error, out of memory, ...) or whose objective is missing, NaN
  or infinite (a diverged loss) is told to Optuna as FAIL, with the reason as a user attribute,
  and the sweep goes on; `max_failure_rate` (default 1.0: never) stops it if too many fail.
- Every trial is recorded in a SQLite journal (`journal`, by default in the sweep directory):
  asked, then finished with its state, objective and error. Started again, the sweeper replays
  the journal into the study, so the sampler learns from every earlier trial, and runs only
  what is missing to reach `n_trials` in total (trials a kill interrupted are recorded as failed
  and do not count). The same command therefore resumes a killed sweep, and the same command
  with a larger `n_trials` extends a finished one. (Optuna's own SQLite storage does not work
  with SQLAlchemy 2 in optuna 2.x; the journal needs only Python's `sqlite3`.)
- Job numbers are trial numbers, so `<sweep dir>/<N>` is trial N across resumptions too.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import sqlite3
import time
import warnings
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # optuna 2.x on SQLAlchemy 2 warns at import; nothing to act on
    warnings.simplefilter("ignore", DeprecationWarning)
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import (
        OptunaSweeperImpl,
        create_params_from_overrides,
    )
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from dialoglab.errors import DialoglabError
from dialoglab.experiment.runner import describe_error

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"


class SweepError(DialoglabError):
    """The sweep itself cannot go on (too many failed trials, a journal of another study)."""


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


class TrialJournal:
    """Every trial of a study in one SQLite file: what was asked, how it ended."""

    def __init__(self, path: Path, study_name: str, directions: Sequence[str]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS trials (number INTEGER PRIMARY KEY, state TEXT, "
                "params TEXT, distributions TEXT, fixed TEXT, `values` TEXT, error TEXT, "
                "started REAL, finished REAL)"
            )
            meta = dict(db.execute("SELECT key, value FROM study").fetchall())
            want = {"study_name": study_name, "directions": json.dumps(list(directions))}
            if not meta:
                db.executemany("INSERT INTO study VALUES (?, ?)", list(want.items()))
            elif meta != want:
                raise SweepError(
                    f"{path} belongs to another study ({meta}, this one is {want}): give this "
                    "sweep another hydra.sweeper.study_name (or hydra.sweep.dir)"
                )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def rows(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY number")]

    def asked(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        distributions = {k: distribution_to_json(d) for k, d in trial.distributions.items()}
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO trials (number, state, params, distributions, fixed, "
                "started) VALUES (?, 'RUNNING', ?, ?, ?, ?)",
                (
                    trial.number,
                    json.dumps(trial.params),
                    json.dumps(distributions),
                    json.dumps(fixed, default=str),
                    time.time(),
                ),
            )

    def finished(self, number: int, state: str, values: list[float] | None, error: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE trials SET state = ?, `values` = ?, error = ?, finished = ? WHERE number = ?",
                (state, json.dumps(values), error or None, time.time(), number),
            )


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *args: Any, journal: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal_path = Path(journal) if journal else None

    # -- study -------------------------------------------------------------------------------
    def _replay(self, study: optuna.Study, journal: TrialJournal) -> None:
        """Add the journal's trials to a study that does not hold them yet."""
        if study.trials:  # a persistent Optuna storage already has them
            return
        for row in journal.rows():
            distributions = {
                k: json_to_distribution(v) for k, v in json.loads(row["distributions"]).items()
            }
            attrs = json.loads(row["fixed"] or "{}")
            state = row["state"]
            values = json.loads(row["values"]) if row["values"] else None
            if state == "RUNNING":  # the sweep was killed while this trial ran
                journal.finished(row["number"], "INTERRUPTED", None, "the sweep was interrupted")
                state = "INTERRUPTED"
            if state == "INTERRUPTED":
                attrs["interrupted"] = True
            if row["error"]:
                attrs["failure"] = row["error"]
            with warnings.catch_warnings():  # stable since optuna 2.0, still tagged experimental
                warnings.simplefilter("ignore", ExperimentalWarning)
                trial = optuna.trial.create_trial(
                    state=TrialState.COMPLETE if state == "COMPLETE" else TrialState.FAIL,
                    values=values if state == "COMPLETE" else None,
                    params=json.loads(row["params"]),
                    distributions=distributions,
                    user_attrs=attrs,
                )
                study.add_trial(trial)
        if study.trials:
            log.info("resumed study from %s: %d earlier trials", journal.path, len(study.trials))

    @staticmethod
    def _counted(trial: FrozenTrial) -> bool:
        return trial.state.is_finished() and not trial.user_attrs.get("interrupted")

    # -- the loop ------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config()
        params_conf.extend(arguments)
        is_grid = (
            isinstance(self.sampler, functools.partial)
            and self.sampler.func == optuna.samplers.GridSampler
        )
        distributions, fixed = create_params_from_overrides(params_conf)
        search_space = dict(self.search_space_distributions or {})
        search_space.update(distributions)
        if is_grid:
            choices = {k: self._to_grid_sampler_choices(d) for k, d in search_space.items()}
            self.sampler = self.sampler(choices)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in choices.values()))
        for name in fixed:
            search_space.pop(name, None)

        directions = self._get_directions()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        journal = None
        if self.journal_path is not None:
            journal = TrialJournal(self.journal_path, study.study_name, directions)
            self._replay(study, journal)

        n_done = sum(self._counted(t) for t in study.trials)
        to_go = max(0, self.n_trials - n_done)
        log.info(
            "study %s: %d of n_trials=%d done, %d to run (sampler %s, directions %s)",
            study.study_name,
            n_done,
            self.n_trials,
            to_go,
            type(self.sampler).__name__,
            directions,
        )
        while to_go > 0:
            batch = min(to_go, max(1, self.n_jobs))
            trials = [study.ask() for _ in range(batch)]
            overrides = self._configure_trials(trials, search_space, fixed)
            if journal is not None:
                for trial in trials:
                    journal.asked(trial, fixed)
            # job number = trial number: sweep subdirectories stay unique across resumptions
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            failures = 0
            for trial, ret in zip(trials, returns, strict=True):
                failures += not self._tell(study, trial, ret, len(directions), journal)
            if failures / len(returns) > self.max_failure_rate:
                raise SweepError(
                    f"{failures} of {len(returns)} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}; see the "
                    f"error.txt of each failed run under {sweep_dir}"
                )
            to_go -= batch

        self._write_results(study, sweep_dir, len(directions))

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        ret: JobReturn,
        n_objectives: int,
        journal: TrialJournal | None,
    ) -> bool:
        values, reason = trial_outcome(ret, n_objectives)
        if ret.hydra_cfg is not None:
            trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
        if values is None:
            trial.set_user_attr("failure", reason)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed, the sweep goes on: %s", trial.number, reason)
        else:
            try:
                study.tell(trial, values=values)
            except RuntimeError as err:  # GridSampler stops the study once the grid is done
                if "Study.stop" not in str(err):
                    raise
        if journal is not None:
            journal.finished(trial.number, "FAIL" if values is None else "COMPLETE", values, reason)
        return values is not None

    def _write_results(self, study: optuna.Study, sweep_dir: Path, n_objectives: int) -> None:
        trials = study.trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "n_complete": len(complete),
            "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        }
        if complete and n_objectives == 1:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        elif complete:
            results["solutions"] = [
                {"params": t.params, "values": t.values} for t in study.best_trials
            ]
        else:
            log.warning("no trial of study %s completed", study.study_name)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)

        names = sorted({k for t in trials for k in t.params})
        with (sweep_dir / TRIALS_FILE).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["number", "state", "value", *names, "failure"])
            for t in trials:
                value = t.values[0] if t.values else ""
                row = [t.number, t.state.name, value, *(t.params.get(k, "") for k in names)]
                writer.writerow([*row, t.user_attrs.get("failure", "")])
