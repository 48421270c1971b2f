"""Sweeps end to end: Hydra grids, Optuna studies that survive failed trials and resume, W&B
sweep command lines, launchers, and the offline report on a real sweep."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dialoglab.experiment.runner import CONFIG_DIR
from dialoglab.experiment.sweep_report import build_report
from dialoglab.experiment.wandb_sweep import (
    agent_command,
    hydra_overrides,
    load_sweep,
    sample_assignments,
)
from tests.conftest import REPO_ROOT, TINY_GRU
from tests.experiment.test_train import run_cli


def run_multirun(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python train.py -m OVERRIDES` as run_cli runs the CLI (no W&B credentials, HOME=cwd)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "-m", f"paths.root_dir={cwd}", *overrides],
        cwd=cwd,
        env={**env, "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=300,
    )


QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compose_with_hydra(overrides: list[str], root: Path) -> DictConfig:
    """Like conftest's compose_config, but the `hydra` node stays (its own interpolations,
    e.g. the sweep dir's ${hydra.sweeper.study_name}, resolve against it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "run")
        cfg.hydra.runtime.cwd = str(root)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def hydra_cfg(tmp_path: Path):
    yield lambda overrides: compose_with_hydra(overrides, tmp_path)
    GlobalHydra.instance().clear()


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def overrides_of(run: Path) -> dict[str, str]:
    items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    return dict(item.split("=", 1) for item in items)


# -- Hydra grid --------------------------------------------------------------------------------
@pytest.mark.slow
def test_grid_multirun_2x2_fast_dev_run(tmp_path: Path) -> None:
    result = run_multirun(
        "debug=fast",
        "logger=many",  # W&B (offline: no credentials here) + CSV
        "data=chatterbot",
        "model.net.hidden_size=16,24",
        "model.net.dropout=0.0,0.2",
        *TINY_GRU[1:4],
        *QUIET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    runs = job_dirs(sweep_dir)
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    grid = {(o["model.net.hidden_size"], o["model.net.dropout"]) for o in map(overrides_of, runs)}
    assert grid == set(product(["16", "24"], ["0.0", "0.2"]))
    for run in runs:
        summary = json.loads((run / "metrics.json").read_text())
        assert math.isfinite(summary["metrics"]["val/ppl"])
        assert summary["wall_time_s"] > 0 and summary["params"] > 0
        # each job its own W&B run (not the first job's run, reused by the later ones)
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1, run
    assert (sweep_dir / "multirun.yaml").is_file()


# -- Optuna --------------------------------------------------------------------------------------
OPTUNA = [
    "hparams_search=gru_attn_optuna",
    "data=chatterbot",
    "logger=csv",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "model.val_generate=8",
    *QUIET,
    # a small search space in which model.net.attention=bogus makes a trial crash (a ConfigError)
    "model.net.hidden_size=choice(16,24)",
    "model.net.attention=choice(dot,bogus)",
    "model.net.encoder_n_layers=1",
    "model.net.decoder_n_layers=1",
    "data.batch_size=32",
    "model.net.dropout=0.1",
    "model.optimizer.lr=0.003",
    "hydra.sweeper.sampler.seed=2",  # trials: dot, bogus, dot (then dot on resume)
]


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, sweep dir) of a 3-trial study whose second trial crashes."""
    root = tmp_path_factory.mktemp("optuna")
    result = run_cli("train.py", *OPTUNA, "hydra.sweeper.n_trials=3", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / "outputs" / "train" / "sweeps" / "gru_attn_optuna"


def read_trials(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "trials.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_optuna_failed_trial_is_recorded_and_the_study_resumes(
    optuna_sweep: tuple[Path, Path],
) -> None:
    root, sweep_dir = optuna_sweep
    trials = read_trials(sweep_dir)
    assert [(t["model.net.attention"], t["state"]) for t in trials] == [
        ("dot", "COMPLETE"),
        ("bogus", "FAIL"),
        ("dot", "COMPLETE"),
    ]
    assert "model.net.attention must be one of" in trials[1]["failure"]
    runs = job_dirs(sweep_dir)
    assert [r.name for r in runs] == ["0", "1", "2"]
    assert "model.net.attention must be one of" in (runs[1] / "error.txt").read_text()
    assert not (runs[1] / "metrics.json").exists()
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert (results["n_complete"], results["n_failed"]) == (2, 1)
    best = json.loads((runs[results["best_trial"]] / "metrics.json").read_text())
    assert results["best_value"] == pytest.approx(best["metrics"]["val/ppl_best"])
    before = {r.name: (r / "metrics.json").stat().st_mtime for r in (runs[0], runs[2])}

    # The same command with n_trials=4 continues the study in its storage: one more trial.
    result = run_cli("train.py", *OPTUNA, "hydra.sweeper.n_trials=4", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 of n_trials=4 done, 1 to run" in result.stdout + result.stderr
    trials = read_trials(sweep_dir)
    assert [t["number"] for t in trials] == ["0", "1", "2", "3"]
    assert trials[3]["state"] == "COMPLETE"
    assert [r.name for r in job_dirs(sweep_dir)] == ["0", "1", "2", "3"]
    assert {r: (sweep_dir / r / "metrics.json").stat().st_mtime for r in before} == before


@pytest.mark.slow
def test_report_on_a_sweep(optuna_sweep: tuple[Path, Path]) -> None:
    _, sweep_dir = optuna_sweep
    report = build_report(sweep_dir)
    n_runs = len(job_dirs(sweep_dir))
    assert len(report.runs) == n_runs
    runs_part, _, study_part = report.markdown.read_text().partition("## Optuna study")
    lines = [line for line in runs_part.splitlines() if line.startswith("| ")]
    assert len(lines) == n_runs + 2  # header, alignment, one row per run
    # the study's trial states and parameter importances, read from its Optuna storage
    states = [t["state"] for t in read_trials(sweep_dir)]
    counts = f"{states.count('COMPLETE')} complete, {states.count('FAIL')} failed"
    assert f"Trials: {counts}." in study_part and "| model.net.attention |" in study_part
    assert report.runs[0].status == "ok"
    assert report.runs[-1].status == "failed"  # the crashed trial is ranked last
    assert "model.net.attention must be one of" in lines[-1]
    assert "model.net.attention" in lines[0] and "val/ppl_best" in lines[0]
    html = report.html.read_text()
    assert html.split("</table>")[0].count("<tr>") == n_runs + 1 and "<img" in html
    assert "<h2>Optuna study gru_attn_optuna</h2>" in html
    names = {p.name for p in report.plots}
    assert {"param_model.net.attention.png", "learning_curves.png"} <= names
    for plot in report.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, plot

    # the module entry point, as `make report DIR=...` runs it
    result = subprocess.run(
        [sys.executable, "-m", "dialoglab.report", str(sweep_dir), "--out", str(sweep_dir / "r2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (sweep_dir / "r2" / "report.md").is_file() and "val/ppl_best" in result.stdout


# -- presets, launchers, W&B ----------------------------------------------------------------
def test_report_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dialoglab.report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no runs found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("preset", "model"),
    [
        ("gru_attn_optuna", "gru_attn"),
        ("gpt2_scratch_optuna", "gpt2_scratch"),
        ("cornell_optuna", "gru_attn"),
    ],
)
def test_optuna_presets_compose_with_a_stable_sweep_dir(
    hydra_cfg, tmp_path: Path, preset: str, model: str
):
    cfg = hydra_cfg([f"hparams_search={preset}"])
    preset_model = yaml.safe_load((CONFIG_DIR / "model" / f"{model}.yaml").read_text())
    assert cfg.model._target_ == preset_model["_target_"]
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("DialoglabOptunaSweeper")
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert sweeper.direction == "minimize" and cfg.optimized_metric == "val/ppl_best"
    # no date in the sweep dir: the same command finds the same study again
    assert cfg.hydra.sweep.dir == str(tmp_path / "outputs" / "train" / "sweeps" / preset)
    assert sweeper.storage is None  # SQLite in the sweep dir: sqlite:///<dir>/optuna.sqlite
    assert sweeper.pruner == "hyperband" and sweeper._recursive_ is False
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 1234
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key) is not None, key
    assert hydra_cfg([f"hparams_search={preset}"]).hydra.sweep.dir == cfg.hydra.sweep.dir


def test_launchers_compose(hydra_cfg) -> None:
    cfg = hydra_cfg(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"

    launcher = hydra_cfg(["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == 2


def test_ddp_trainer_configs_compose(make_cfg) -> None:
    for name, backend in (("ddp", None), ("ddp_cpu", "gloo")):
        cfg = make_cfg("train", [f"trainer={name}"])
        assert cfg.trainer.strategy._target_.endswith("ResolvedConfigDDPStrategy")
        assert cfg.trainer.strategy.process_group_backend == backend
        assert cfg.trainer.use_distributed_sampler is False
    assert cfg.trainer.devices == 2 and cfg.trainer.accelerator == "cpu"


def test_wandb_sweep_command_lines_compose(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands `wandb agent` runs for conf/wandb_sweep/gru_attn.yaml are Hydra overrides
    of train.py; each assignment ends up in the composed config."""
    sweep = load_sweep(REPO_ROOT / "conf" / "wandb_sweep" / "gru_attn.yaml")
    assert sweep["metric"] == {"name": "val/ppl_best", "goal": "minimize"}
    assignments = sample_assignments(sweep, 3)
    assignments.append({**assignments[0], "model.optimizer.lr": 1e-05, "model.net.dropout": 0.35})
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # what the agent sets for its runs
    for assignment in assignments:
        argv = agent_command(sweep, assignment)
        assert argv[:3] == ["/usr/bin/env", "python", "train.py"]
        cfg = make_cfg("train", hydra_overrides(argv, "train.py"))
        for key, value in assignment.items():
            assert OmegaConf.select(cfg, key) == pytest.approx(value), key
        assert cfg.model._target_.endswith("Seq2SeqModule")
        assert {"wandb", "csv"} <= set(cfg.logger)
        assert cfg.logger.wandb.group == "abc123"  # runs of one sweep are grouped


def test_multirun_jobs_are_grouped_in_wandb(hydra_cfg) -> None:
    """In a multirun, W&B group = the sweep's name, and the run name carries the job number."""
    cfg = hydra_cfg(["hparams_search=gru_attn_optuna", "logger=wandb"])
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = 3
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == "gru_attn_optuna"
    assert cfg.logger.wandb.name.endswith("-job3")

    cfg = hydra_cfg(["logger=wandb"])  # a single run: no group, no job number
    assert cfg.logger.wandb.group == ""
    assert "-job" not in cfg.logger.wandb.name
