"""The Optuna sweeper's bookkeeping: what counts as a failed trial, and the resume journal."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus

from dialoglab.errors import ConfigError
from dialoglab.experiment.sweeper import (  # first: it imports optuna without SQLAlchemy's noise
    ResumableOptunaSweeperImpl,
    SweepError,
    TrialJournal,
    optuna,
    trial_outcome,
)

CategoricalDistribution = optuna.distributions.CategoricalDistribution
TrialState = optuna.trial.TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def job(value: object = None, error: BaseException | None = None) -> JobReturn:
    ret = JobReturn()
    if error is not None:
        ret.return_value, ret.status = error, JobStatus.FAILED
    else:
        ret.return_value, ret.status = value, JobStatus.COMPLETED
    return ret


def test_finite_objective_completes() -> None:
    assert trial_outcome(job(12.5), 1) == ([12.5], "")
    assert trial_outcome(job((1.0, 2.0)), 2) == ([1.0, 2.0], "")


@pytest.mark.parametrize(
    ("ret", "reason"),
    [
        (job(error=RuntimeError("CUDA out of memory")), "RuntimeError: CUDA out of memory"),
        (job(float("nan")), "NaN loss"),
        (job(math.inf), "NaN loss"),
        (job(None), "optimized_metric"),
        (job("oops"), "not a number"),
    ],
)
def test_crashes_and_diverged_runs_fail(ret: JobReturn, reason: str) -> None:
    values, why = trial_outcome(ret, 1)
    assert values is None
    assert reason in why


def test_wrapped_user_error_is_reported_as_itself() -> None:
    """Hydra's instantiate wraps a constructor's ConfigError: the reason is the user's error."""
    try:
        try:
            raise ConfigError("model.net.attention must be one of dot, general, concat")
        except ConfigError as inner:
            raise RuntimeError("Error in call to target 'Seq2SeqModule'") from inner
    except RuntimeError as outer:
        _, why = trial_outcome(job(error=outer), 1)
    assert why == "model.net.attention must be one of dot, general, concat"


def _record(journal: TrialJournal, study: optuna.Study, hidden: int) -> optuna.Trial:
    trial = study.ask()
    trial._suggest("model.net.hidden_size", CategoricalDistribution([16, 32, 64]))
    journal.asked(trial, {"model.net.attention": "dot"})
    return trial


def test_journal_replays_a_killed_sweep(tmp_path: Path) -> None:
    path = tmp_path / "sweep" / "trials.sqlite"
    first = optuna.create_study(study_name="s")
    journal = TrialJournal(path, "s", ["minimize"])
    done = _record(journal, first, 16)
    journal.finished(done.number, "COMPLETE", [42.0], "")
    failed = _record(journal, first, 32)
    journal.finished(failed.number, "FAIL", None, "model.net.attention must be one of ...")
    _record(journal, first, 64)  # still RUNNING: the sweep was killed here

    # the same command again: a fresh in-memory study, replayed from the file
    study = optuna.create_study(study_name="s")
    sweeper = ResumableOptunaSweeperImpl(
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="minimize",
        storage=None,
        study_name="s",
        n_trials=5,
        n_jobs=1,
        max_failure_rate=1.0,
        search_space=None,
        custom_search_space=None,
        params=None,
        journal=str(path),
    )
    sweeper._replay(study, TrialJournal(path, "s", ["minimize"]))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert study.best_value == 42.0
    assert study.trials[1].user_attrs["failure"].startswith("model.net.attention")
    assert study.trials[2].user_attrs["interrupted"] is True
    assert sum(sweeper._counted(t) for t in study.trials) == 2  # the killed trial is run again
    assert study.ask().number == 3  # job numbers (= sweep subdirectories) continue
    rows = TrialJournal(path, "s", ["minimize"]).rows()
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "INTERRUPTED"]


def test_journal_of_another_study_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trials.sqlite"
    TrialJournal(path, "a", ["minimize"])
    with pytest.raises(SweepError, match="another study"):
        TrialJournal(path, "b", ["minimize"])
