"""Optuna sweeps end to end on tiny runs: parallel trials sharing one study, pruning, DDP trials,
a killed sweep resumed, and optuna-dashboard serving the study."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dialoglab.experiment.sweep_report import build_report
from tests.conftest import REPO_ROOT
from tests.experiment.test_sweeps import OPTUNA, job_dirs, overrides_of
from tests.experiment.test_train import run_cli

# every trial is pruned after its second epoch (val/ppl_best > 1): a deterministic pruner
PRUNE_AFTER_EPOCH_1 = (
    "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:1.0,n_warmup_steps:1}"
)
TRIALS = [*OPTUNA, "model.net.attention=dot", "model.net.dropout=interval(0.0,0.3)"]


def load_study(sweep_dir: Path, name: str = "gru_attn_optuna") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.sqlite'}")


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials, 2 at a time (hydra/launcher=local), 3 epochs each, pruned after epoch 1."""
    root = tmp_path_factory.mktemp("pruned")
    result = run_cli(
        "train.py",
        *TRIALS,
        "trainer.max_epochs=3",
        "hydra.sweeper.n_trials=4",
        "hydra/launcher=local",
        "hydra.sweeper.n_jobs=2",
        PRUNE_AFTER_EPOCH_1,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "outputs" / "train" / "sweeps" / "gru_attn_optuna"


@pytest.mark.slow
def test_parallel_trials_share_the_study_and_are_pruned(pruned_sweep: Path) -> None:
    trials = load_study(pruned_sweep).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [r.name for r in job_dirs(pruned_sweep)] == ["0", "1", "2", "3"]
    for trial in trials:
        run = pruned_sweep / str(trial.number)
        assert overrides_of(run)["++sweep_trial.number"] == str(trial.number)
        assert float(overrides_of(run)["model.net.dropout"]) == trial.params["model.net.dropout"]
        assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_epoch"] == 1
        assert sorted(trial.intermediate_values) == [0, 1]  # stopped before epoch 2
        assert trial.value == trial.intermediate_values[1]
    dropouts = {t.params["model.net.dropout"] for t in trials}
    assert len(dropouts) == 4  # no trial ran twice

    report = build_report(pruned_sweep, out=pruned_sweep / "r")  # marks pruned runs
    assert {r.status for r in report.runs} == {"pruned after epoch 1"}
    assert "Trials: 4 pruned." in report.markdown.read_text()


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(pruned_sweep: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    url = f"sqlite:///{pruned_sweep / 'optuna.sqlite'}"
    proc = subprocess.Popen(
        [str(dashboard), url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", proc)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["gru_attn_optuna"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", proc)
        assert [(t["number"], t["state"]) for t in detail["trials"]] == [
            (n, "Pruned") for n in range(4)
        ]
        assert all(len(t["intermediate_values"]) == 2 for t in detail["trials"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get_json(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    """GET `url` once the server answers (it needs a few seconds to start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_ddp_trials_train_their_own_params_and_stop_together(tmp_path: Path) -> None:
    """2 trials x 2 processes (trainer=ddp_cpu): both ranks of a trial train its parameters,
    only rank 0 reports, and the pruning decision after epoch 1 stops both ranks."""
    result = run_cli(
        "train.py",
        *TRIALS,
        "trainer=ddp_cpu",
        "trainer.max_epochs=3",
        "hydra.sweeper.n_trials=2",
        PRUNE_AFTER_EPOCH_1,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "train" / "sweeps" / "gru_attn_optuna"
    trials = load_study(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    digests = set()
    for trial in trials:
        run = sweep_dir / str(trial.number)
        ranks = [json.loads((run / "trial" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        for record in ranks:
            assert record["world_size"] == 2 and record["trial"] == trial.number
            assert record["params"] == trial.params  # this rank trained the trial's values
            assert record["epochs_validated"] == [0, 1] and record["pruned_at_epoch"] == 1
        ddp = [json.loads((run / "ddp" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        assert ddp[0]["config_sha256"] == ddp[1]["config_sha256"]
        digests.add(ddp[0]["config_sha256"])
    assert len(digests) == 2  # the two trials trained different configs


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_the_same_command(tmp_path: Path) -> None:
    """Kill the sweep while trial 1 trains; the same command records it as interrupted (FAIL)
    and runs what is missing to reach n_trials finished trials."""
    # no pruner: this is about resuming, and Hyperband may stop the rerun's quick trial
    command = [
        *TRIALS,
        "hydra.sweeper.pruner=none",
        "trainer.max_epochs=30",
        "hydra.sweeper.n_trials=2",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), f"paths.root_dir={tmp_path}", *command],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sweep_dir = tmp_path / "outputs" / "train" / "sweeps" / "gru_attn_optuna"
    deadline = time.monotonic() + 240
    while not (sweep_dir / "1" / "csv" / "metrics.csv").is_file():  # trial 1 is training
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [t.state for t in load_study(sweep_dir).trials]
    assert before == [TrialState.COMPLETE, TrialState.RUNNING]

    command[-2] = "trainer.max_epochs=2"  # the rerun's trials are quick
    result = run_cli("train.py", *command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_study(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["interrupted"] is True
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert (results["n_complete"], results["n_failed"]) == (2, 1)
