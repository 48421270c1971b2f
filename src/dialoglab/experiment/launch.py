"""What a multi-process launch tells each process: the name all its processes share, and whether
this one is global rank 0, read from the variables SLURM, torchrun and Lightning set.

Each node of a multi-node run composes its own config before any process group exists, so
anything random or time-stamped in it (the run directory's name) would differ between nodes.
A launch that names itself (a SLURM job step, a torchrun rendezvous id) gives every node the same
run directory; other launches pass the same `hydra.run.dir=...` on every node.
"""

from __future__ import annotations

import os

# torchrun's run id when none was given (static rendezvous with --master-addr)
_UNNAMED_TORCHRUN = ("", "none")


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def slurm_run_name() -> str | None:
    """'slurm-<job>' inside a multi-task SLURM job step (`srun` with several tasks), else None.

    The job id is kept by a requeued job, so a requeued run finds its own directory again; an
    array job is named by array id and task. A later step of the same job gets '.<step>'."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or "SLURM_STEP_ID" not in os.environ or _int_env("SLURM_NTASKS", 1) < 2:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        job = f"{array_job}_{task}"
    step = os.environ.get("SLURM_STEP_ID", "0")
    return f"slurm-{job}" + (f".{step}" if step not in ("0", "") else "")


def torchrun_run_name() -> str | None:
    """'torchrun-<rdzv id>' under `torchrun --rdzv-id ID` (or --standalone) with several
    processes; None for torchrun's static rendezvous, which has no id."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id in _UNNAMED_TORCHRUN or _int_env("WORLD_SIZE", 1) < 2:
        return None
    return f"torchrun-{run_id}"


def shared_run_name() -> str | None:
    """The name every process of this launch agrees on, or None when the launch has none."""
    return slurm_run_name() or torchrun_run_name()


def is_launch_rank_zero() -> bool:
    """False for a process that a launcher started as rank > 0 (another node, another local
    rank): it must not write the run's files, which global rank 0 owns. True outside launches."""
    for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        if _int_env(name, 0) != 0:
            return False
    return True
