"""What each node of a multi-node launch derives alone: the shared run name, its rank, and the
errors that tell a user what differs or which rank was lost."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dialoglab.experiment.distributed import config_digest, mismatch_message, peer_failure
from dialoglab.experiment.launch import is_launch_rank_zero, shared_run_name
from dialoglab.experiment.resolvers import run_name

LAUNCH_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_PROCID",
    "TORCHELASTIC_RUN_ID",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_RANK",
)


@pytest.fixture(autouse=True)
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)


def test_run_name_of_a_plain_run_is_dated_and_random() -> None:
    assert shared_run_name() is None
    first, second = run_name(), run_name()
    assert first != second and first[:2] == "20" and len(first.split("_")[-1]) == 6


def test_srun_tasks_share_the_job_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert shared_run_name() is None  # an allocation, but no multi-task step: runs stay apart
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert run_name() == "slurm-4242"
    monkeypatch.setenv("SLURM_STEP_ID", "2")
    assert run_name() == "slurm-4242.2"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_name() == "slurm-4200_3.2"


def test_torchrun_is_named_by_its_rendezvous_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # static rendezvous: no id
    assert shared_run_name() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "exp1")
    assert shared_run_name() == "torchrun-exp1"


@pytest.mark.parametrize("name", ["RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"])
def test_only_rank_zero_owns_the_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_launch_rank_zero()
    monkeypatch.setenv(name, "0")
    assert is_launch_rank_zero()
    monkeypatch.setenv(name, "1")
    assert not is_launch_rank_zero()


def test_mismatch_names_the_keys_and_the_shared_run_dir_fix() -> None:
    rank0 = {"paths": {"output_dir": "/runs/a"}, "model": {"hidden": 16}, "logger": {"id": "x"}}
    rank1 = {"paths": {"output_dir": "/runs/b"}, "model": {"hidden": 16}, "logger": {"id": "y"}}
    assert config_digest(rank0) != config_digest(rank1)
    assert config_digest(rank0) == config_digest({**rank1, "paths": rank0["paths"]})  # logger
    message = mismatch_message([rank0, rank1], [config_digest(rank0), config_digest(rank1)])
    assert "paths.output_dir: rank 0 has '/runs/a', rank 1 has '/runs/b'" in message
    assert "hydra.run.dir=" in message and "logger" not in message


def test_a_lost_peer_becomes_a_clear_error() -> None:
    cfg = OmegaConf.create(
        {"trainer": {"strategy": {"timeout_s": 30}}, "paths": {"output_dir": "/r"}}
    )
    reset = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")
    err = peer_failure(reset, cfg, rank=0)
    assert err is not None and "another rank stopped, so" in str(err)
    assert "resume=auto" in str(err) and "/r/checkpoints" in str(err)
    frozen = peer_failure(RuntimeError("Application timeout caused pair closure"), cfg, rank=1)
    assert frozen is not None and "did not answer for trainer.strategy.timeout_s=30" in str(frozen)
    assert peer_failure(RuntimeError("shape mismatch"), cfg, rank=0) is None
