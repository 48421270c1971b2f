"""The SLURM path end to end, here: Hydra's submitit launchers run real sweeps.

- `hydra/launcher=submitit_local`: the launcher code path SLURM uses, with local processes.
- `hydra/launcher=slurm` with stand-ins for sbatch/srun/sacct/scancel/scontrol on PATH
  (tests/helpers/fake_slurm): submission, the sbatch script, srun's tasks with the SLURM_*
  variables, Lightning's SLURM environment (one process per node, its ranks from SLURM_PROCID
  and SLURM_NODEID), training, and submitit collecting the results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, TINY_GRU
from tests.experiment.test_sweeps import job_dirs, overrides_of

pytestmark = pytest.mark.slow

FAKE_SLURM = REPO_ROOT / "tests" / "helpers" / "fake_slurm"
SWEEP = [
    "data=chatterbot",
    *TINY_GRU[1:5],
    "model.net.hidden_size=16,24",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "sample_replies=0",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def multirun(*overrides: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "-m", f"paths.root_dir={cwd}", *overrides],
        cwd=cwd,
        env={**env, "HOME": str(cwd), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=400,
    )


def sweep_jobs(root: Path) -> tuple[Path, dict[str, Path]]:
    (sweep_dir,) = (root / "outputs" / "train" / "multiruns").iterdir()
    return sweep_dir, {
        overrides_of(run)["model.net.hidden_size"]: run for run in job_dirs(sweep_dir)
    }


def assert_trained(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["val/ppl"] > 1 and (run / "finished").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_000.ckpt",
        "last.ckpt",
    ]


def test_submitit_local_sweep(tmp_path: Path) -> None:
    result = multirun("hydra/launcher=submitit_local", *SWEEP, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir, jobs = sweep_jobs(tmp_path)
    assert set(jobs) == {"16", "24"}
    for run in jobs.values():
        assert_trained(run)
    logs = list((sweep_dir / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2 and len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2


def test_slurm_sweep_of_two_node_ddp_jobs_through_stand_in_commands(tmp_path: Path) -> None:
    slurm_home = tmp_path / "slurm"
    env = {
        **os.environ,
        "PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_DIR": str(slurm_home),
        "FAKE_SLURM_PYTHON": sys.executable,
    }
    result = multirun(
        "hydra/launcher=slurm",
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=30",
        "logger=csv",
        *SWEEP,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # one sbatch call: an array of the sweep's 2 jobs, each 2 nodes x 1 task, CPU only
    (script_path,) = (slurm_home / "submitted").glob("*.sh")
    script = script_path.read_text()
    print(f"\n{script}")
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=30",
        "#SBATCH --partition=debug",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script.splitlines(), line
    assert "gpus" not in script  # trainer=ddp_cpu asks for no GPU
    assert re.search(r"^srun .* -m submitit\.core\._submit ", script, re.MULTILINE)
    calls = (slurm_home / "calls.log").read_text().splitlines()
    assert sum(c.startswith("sbatch ") for c in calls) == 1
    assert sum(c.startswith("srun ") for c in calls) == 2

    sweep_dir, jobs = sweep_jobs(tmp_path)
    assert set(jobs) == {"16", "24"}
    for hidden, run in jobs.items():
        assert_trained(run)
        ranks = [json.loads(p.read_text()) for p in sorted((run / "ddp").glob("rank_*.json"))]
        # Lightning's SLURM environment: one process per node, ranks from SLURM_PROCID/NODEID
        assert [(r["global_rank"], r["node_rank"], r["world_size"]) for r in ranks] == [
            (0, 0, 2),
            (1, 1, 2),
        ]
        assert {r["cluster_environment"] for r in ranks} == {"SLURMEnvironment"}
        assert len({r["config_sha256"] for r in ranks}) == 1
        assert json.loads((run / "metrics.json").read_text())["metrics"]["val/ppl"] > 1, hidden
    # submitit collected every task's result (2 jobs x 2 tasks), where the launcher puts them
    assert len(list((sweep_dir / ".submitit").glob("*_*/*_result.pkl"))) == 4


def test_slurm_signal_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path: Path) -> None:
    """SIGUSR2 (sent by the stand-in once the first step checkpoint exists, as SLURM's
    `--signal=USR2@120` would before the time limit): both ranks save last.ckpt, rank 0 runs
    `scontrol requeue`, the job runs again and continues from that checkpoint to the end."""
    slurm_home = tmp_path / "slurm"
    env = {
        **os.environ,
        "PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_DIR": str(slurm_home),
        "FAKE_SLURM_PYTHON": sys.executable,
        "FAKE_SLURM_SIGNAL_WHEN": f"{tmp_path}/outputs/train/multiruns/*/0/checkpoints/step_*",
    }
    result = multirun(
        "hydra/launcher=slurm",
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "logger=csv",
        "test=false",
        "callbacks.step_checkpoint.every_n_train_steps=4",
        *[o for o in SWEEP if not o.startswith(("model.net.hidden_size", "trainer.limit_train"))],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = (slurm_home / "calls.log").read_text().splitlines()
    (job,) = {c.split()[2] for c in calls if c.startswith("scontrol requeue ")}
    assert f"signal USR2 {job}" in calls and f"requeued {job} 1" in calls
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_0_log.*"))
    saved = re.search(r"SLURM signal: saved \S+last\.ckpt at step (\d+)", logs)
    assert saved and "a requeued SLURM job continues its own run" in logs, logs[-3000:]
    run = sweep_dir / "0"
    steps = {
        p.name: torch.load(p, map_location="cpu", weights_only=True)["global_step"]
        for p in (run / "checkpoints").glob("*.ckpt")
    }
    print(f"\nsignalled at step {saved.group(1)}; checkpoints after the requeue: {steps}")
    assert steps["last.ckpt"] == steps["epoch_000.ckpt"] > int(saved.group(1)) >= 4
    assert (run / "finished").exists()
