"""The Optuna sweeper without training: search-space parsing, how each job's outcome is told to
Optuna (complete, failed, pruned), resuming a killed study, and the pruning callback's protocol.

A fake Hydra launcher stands in for training: each "job" reads its trial from the overrides the
sweeper gives it, reports through the same `TrialRef` the real pruning callback uses, and returns
an objective computed from its parameters.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dialoglab.errors import ConfigError, TrainingError
from dialoglab.experiment.pruning import TrialPruning
from dialoglab.experiment.search_space import SearchSpace
from dialoglab.experiment.study import (
    OWNER,
    PRUNED_AT,
    TrialRef,
    make_pruner,
    open_storage,
    pruner_spec,
)
from dialoglab.experiment.sweeper import OptunaSweep, SweepError, consecutive_runs, trial_outcome

optuna.logging.set_verbosity(optuna.logging.WARNING)


def job(value: object = None, error: BaseException | None = None) -> JobReturn:
    ret = JobReturn()
    if error is not None:
        ret.return_value, ret.status = error, JobStatus.FAILED
    else:
        ret.return_value, ret.status = value, JobStatus.COMPLETED
    return ret


# -- outcomes -------------------------------------------------------------------------------------
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


# -- search space ---------------------------------------------------------------------------------
def test_search_space_syntax_of_the_presets_and_hydra() -> None:
    params = {
        "model.net.hidden_size": "choice(128, 256, 512)",
        "model.net.dropout": "interval(0.0, 0.4)",
        "model.optimizer.lr": "tag(log, interval(1e-4, 3e-3))",
        "model.net.encoder_n_layers": "tag(int, interval(1, 4))",
        "data.batch_size": "range(16, 65, 16)",
        "model.net.attention": "dot,general",
    }
    space = SearchSpace.parse(params, ["data=chatterbot", "model.net.dropout=0.1"])
    d = space.distributions
    assert d["model.net.hidden_size"] == CategoricalDistribution([128, 256, 512])
    assert d["model.optimizer.lr"] == FloatDistribution(1e-4, 3e-3, log=True)
    assert d["model.net.encoder_n_layers"] == IntDistribution(1, 4)
    assert d["data.batch_size"] == IntDistribution(16, 64, step=16)  # stop excluded, as in Hydra
    assert d["model.net.attention"] == CategoricalDistribution(["dot", "general"])
    assert "model.net.dropout" not in d  # fixed on the command line: out of the search space
    overrides = space.job_overrides(
        {"model.net.hidden_size": 256, "model.optimizer.lr": 0.00042, "model.net.attention": "dot"},
        ["++sweep_trial.number=3"],
    )
    assert overrides[:2] == ["data=chatterbot", "model.net.dropout=0.1"]
    parsed = {
        o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)
    }
    assert parsed["model.net.hidden_size"] == 256 and parsed["model.optimizer.lr"] == 0.00042
    assert parsed["model.net.attention"] == "dot" and parsed["sweep_trial.number"] == 3
    with pytest.raises(ConfigError, match="grid sampler"):
        space.grid()


def test_trial_ref_survives_the_override_grammar() -> None:
    ref = TrialRef("my study", "sqlite:////tmp/a b/optuna.sqlite", 7)
    parsed = OverridesParser.create().parse_overrides(ref.overrides())
    cfg = OmegaConf.create({})
    for override in parsed:
        OmegaConf.update(cfg, override.key_or_group, override.value(), force_add=True)
    assert TrialRef.from_config(cfg) == ref


# -- pruners --------------------------------------------------------------------------------------
def test_pruner_by_name_or_target() -> None:
    assert isinstance(make_pruner(pruner_spec("median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(pruner_spec("hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(pruner_spec(None)), optuna.pruners.NopPruner)
    spec = pruner_spec(OmegaConf.create({"_target_": "optuna.pruners.PercentilePruner",
                                         "percentile": 25.0}))  # fmt: skip
    assert isinstance(make_pruner(spec), optuna.pruners.PercentilePruner)
    with pytest.raises(ConfigError, match="median, hyperband"):
        pruner_spec("medain")
    with pytest.raises(ConfigError, match="not an Optuna pruner"):
        make_pruner({"_target_": "collections.OrderedDict"})


# -- the sweep loop, with a fake launcher -----------------------------------------------------------
class FakeLauncher:
    """Runs each job in-process: reports `curve(params)` per epoch to its trial, stops when the
    pruner says so (as TrialPruning does), returns the last value; `crash` makes a job raise."""

    def __init__(self, epochs: int = 3, crash: str | None = None) -> None:
        self.epochs = epochs
        self.crash = crash
        self.jobs: list[tuple[int, list[str]]] = []

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for i, overrides in enumerate(batch):
            self.jobs.append((initial_job_idx + i, overrides))
            returns.append(self.run(overrides))
        return returns

    def run(self, overrides: list[str]) -> JobReturn:
        cfg = OmegaConf.create({})
        for o in OverridesParser.create().parse_overrides(overrides):
            OmegaConf.update(cfg, o.key_or_group.lstrip("+"), o.value(), force_add=True)
        if self.crash and self.crash in overrides:
            return job(error=ConfigError(f"bad trial: {self.crash}"))
        trial = TrialRef.from_config(cfg).open()
        for epoch in range(self.epochs):
            value = float(cfg.x) * (self.epochs - epoch)
            trial.report(value, step=epoch)
            if trial.should_prune():
                trial.set_user_attr(PRUNED_AT, epoch)
                break
        return job(value)


def make_sweep(tmp_path: Path, launcher: FakeLauncher, **settings: Any) -> OptunaSweep:
    conf: dict[str, Any] = {
        "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
        "pruner": "none",
        "direction": "minimize",
        "study_name": "s",
        "storage": None,
        "n_trials": 4,
        "n_jobs": 1,
        "max_failure_rate": 1.0,
        "params": {"x": "choice(1, 2, 3, 4, 5, 6, 7, 8)"},
    }
    sweep = OptunaSweep(**{**conf, **settings})
    sweep.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweep.launcher = launcher
    return sweep


def load(tmp_path: Path) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'sweep' / 'optuna.sqlite'}"
    return optuna.load_study(study_name="s", storage=open_storage(url))


def test_failed_trials_are_recorded_and_a_larger_n_trials_extends_the_study(tmp_path: Path):
    launcher = FakeLauncher(crash="x=3")
    make_sweep(tmp_path, launcher, params={"x": "choice(3, 4)"}).sweep([])
    study = load(tmp_path)
    assert len(study.trials) == 4
    for t in study.trials:
        assert t.state == (TrialState.FAIL if t.params["x"] == 3 else TrialState.COMPLETE)
        if t.state == TrialState.FAIL:
            assert t.user_attrs["failure"] == "bad trial: x=3"
    assert [n for n, _ in launcher.jobs] == [0, 1, 2, 3]  # job number = trial number
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["n_complete"] + results["n_failed"] == 4

    make_sweep(tmp_path, launcher, params={"x": "choice(3, 4)"}, n_trials=6).sweep([])
    assert [t.number for t in load(tmp_path).trials] == [0, 1, 2, 3, 4, 5]
    assert [n for n, _ in launcher.jobs][4:] == [4, 5]


def test_a_killed_sweep_resumes(tmp_path: Path) -> None:
    make_sweep(tmp_path, FakeLauncher(), n_trials=2).sweep([])
    study = load(tmp_path)
    # a sweep killed while trial 2 ran: RUNNING, owned by a process that no longer exists
    killed = study.ask({"x": CategoricalDistribution([1, 2, 3, 4, 5, 6, 7, 8])})
    killed.set_user_attr(OWNER, f"{socket.gethostname()}:{2**22 + 12345}")
    other = study.ask({"x": CategoricalDistribution([1, 2, 3, 4, 5, 6, 7, 8])})
    other.set_user_attr(OWNER, "another-machine:1")  # a live sweep elsewhere: left alone

    launcher = FakeLauncher()
    make_sweep(tmp_path, launcher, n_trials=4).sweep([])
    trials = load(tmp_path).trials
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["interrupted"] is True
    assert trials[3].state == TrialState.RUNNING
    # 2 done + 1 running elsewhere: one more trial reaches n_trials=4
    assert [n for n, _ in launcher.jobs] == [4]
    assert trials[4].state == TrialState.COMPLETE


def test_pruned_trials_and_batches(tmp_path: Path) -> None:
    """ThresholdPruner prunes x >= 6 (value 3x at epoch 0 > 17): recorded PRUNED at epoch 0."""
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "upper": 17.0}
    launcher = FakeLauncher()
    make_sweep(tmp_path, launcher, pruner=pruner, n_trials=6, n_jobs=4).sweep([])
    trials = load(tmp_path).trials
    assert len(trials) == 6 and {len(j[1]) for j in launcher.jobs} == {4}
    assert sorted(n for n, _ in launcher.jobs) == list(range(6))
    for t in trials:
        pruned = t.params["x"] >= 6
        assert t.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE), t
        if pruned:
            assert t.user_attrs[PRUNED_AT] == 0 and t.value == 3.0 * t.params["x"]
    assert any(t.state == TrialState.PRUNED for t in trials)


def test_too_many_failures_stop_the_sweep(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, FakeLauncher(crash="x=3"), params={"x": "choice(3)"},
                       max_failure_rate=0.5)  # fmt: skip
    with pytest.raises(SweepError, match="max_failure_rate"):
        sweep.sweep([])


def test_direction_of_an_existing_study_must_match(tmp_path: Path) -> None:
    make_sweep(tmp_path, FakeLauncher(), n_trials=1).sweep([])
    with pytest.raises(SweepError, match="direction"):
        make_sweep(tmp_path, FakeLauncher(), n_trials=2, direction="maximize").sweep([])


def test_grid_sampler_runs_each_point_once(tmp_path: Path) -> None:
    grid = {"_target_": "optuna.samplers.GridSampler", "seed": 0}
    launcher = FakeLauncher()
    make_sweep(tmp_path, launcher, sampler=grid, params={"x": "range(1, 4)"}, n_trials=10).sweep([])
    trials = load(tmp_path).trials
    assert sorted(t.params["x"] for t in trials) == [1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_consecutive_runs_split_where_numbers_jump() -> None:
    trials = [SimpleNamespace(number=n) for n in (4, 5, 7, 8, 10)]
    assert [[t.number for t in r] for r in consecutive_runs(trials)] == [[4, 5], [7, 8], [10]]


# -- the pruning callback's protocol ----------------------------------------------------------------
class FakeStrategy:
    """One rank's view of a 2-rank group: broadcast returns rank 0's object."""

    def __init__(self, shared: dict[str, Any], rank: int) -> None:
        self.shared, self.rank = shared, rank

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if self.rank == src:
            self.shared["obj"] = obj
        return self.shared["obj"]


def test_only_rank_0_talks_to_the_study_and_all_ranks_stop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.sqlite'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.set_user_attr("dialoglab.pruner", pruner_spec({"_target_": "optuna.pruners."
                        "ThresholdPruner", "upper": 5.0}))  # fmt: skip
    trial = study.ask({"x": FloatDistribution(0, 1)})
    ref = TrialRef("s", url, trial.number)
    cfg = OmegaConf.create({"x": trial.params["x"], "paths": {"output_dir": str(tmp_path)}})
    shared: dict[str, Any] = {}
    ranks = []
    for rank in (0, 1):
        ranks.append(
            (
                TrialPruning(ref if rank == 0 else TrialRef("s", "sqlite:///nowhere", 0), "obj", cfg),
                SimpleNamespace(is_global_zero=rank == 0, global_rank=rank, world_size=2,
                                strategy=FakeStrategy(shared, rank), sanity_checking=False,
                                should_stop=False, current_epoch=0, callback_metrics={}),
            )
        )  # fmt: skip
    for cb, tr in ranks:  # rank 1 never opens its (bogus) trial: only rank 0 talks to the study
        cb.on_fit_start(tr, None)
    for epoch, value in enumerate((4.0, 6.0)):
        for cb, tr in ranks:
            tr.current_epoch, tr.callback_metrics = (
                epoch,
                {"obj": value if tr.is_global_zero else 0},
            )
            cb.on_validation_end(tr, None)
    assert all(tr.should_stop for _, tr in ranks)
    for cb, tr in ranks:
        cb.on_fit_end(tr, None)
    frozen = load_trial(url, trial.number)
    assert frozen.intermediate_values == {0: 4.0, 1: 6.0}
    assert frozen.user_attrs[PRUNED_AT] == 1
    for rank in (0, 1):
        record = yaml.safe_load((tmp_path / "trial" / f"rank_{rank}.json").read_text())
        assert record["pruned_at_epoch"] == 1 and record["epochs_validated"] == [0, 1]
        assert record["params"] == {"x": trial.params["x"]}
    assert not os.path.exists("nowhere")


def load_trial(url: str, number: int) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name="s", storage=url).trials[number]


def test_a_trial_rank_0_cannot_open_fails_every_rank(tmp_path: Path) -> None:
    """Rank 0's error reaches the other ranks: none of them waits in a collective for it."""
    url = f"sqlite:///{tmp_path / 'optuna.sqlite'}"
    optuna.create_study(study_name="other", storage=open_storage(url))
    shared: dict[str, Any] = {}
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    for rank in (0, 1):
        callback = TrialPruning(TrialRef("missing", url, 0), "obj", cfg)
        trainer = SimpleNamespace(is_global_zero=rank == 0, strategy=FakeStrategy(shared, rank))
        with pytest.raises(TrainingError, match="study missing"):
            callback.on_fit_start(trainer, None)
