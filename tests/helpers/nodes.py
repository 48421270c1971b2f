"""Start the nodes of a multi-node run as cluster users do, all on localhost: one process per
"node" (`python train.py` with Lightning's MASTER_ADDR/MASTER_PORT/NODE_RANK, or `torchrun`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO_ROOT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@dataclass
class Node:
    """One finished node: exit code, merged output, seconds from the launch to its exit."""

    returncode: int
    output: str
    seconds: float


def node_env(cwd: Path, **extra: str) -> dict[str, str]:
    """The environment of a node process: one CPU thread, W&B offline, HOME in the test dir."""
    env = {**os.environ, "HOME": str(cwd), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return {**env, **extra}


def lightning_node(overrides: list[str], script: str = "train.py") -> list[str]:
    """`python train.py ...`; `lightning_envs` gives it MASTER_ADDR, MASTER_PORT and NODE_RANK.
    `script` may be tests/helpers/crash.py, which crashes as DIALOGLAB_TEST_CRASH says."""
    return [sys.executable, str(REPO_ROOT / script), *overrides]


def torchrun_node(
    rank: int, port: int, overrides: list[str], rdzv_id: str | None = None
) -> list[str]:
    """`torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr 127.0.0.1 ...`."""
    command = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank)]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    if rdzv_id:
        command += ["--rdzv-id", rdzv_id]
    return [*command, str(REPO_ROOT / "train.py"), *overrides]


def run_nodes(
    commands: list[list[str]],
    envs: list[dict[str, str]],
    cwd: Path,
    timeout: float = 240,
    wait_for: int | None = None,
) -> list[Node]:
    """Start every node at once and wait until the first `wait_for` nodes (default: all) have
    ended; a node still running then, or at `timeout`, is killed (its returncode says so)."""
    wait_for = len(commands) if wait_for is None else wait_for
    start = time.monotonic()
    logs = [cwd / f"node{rank}.log" for rank in range(len(commands))]
    procs = [
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        for cmd, env, log in zip(commands, envs, logs, strict=True)
    ]
    ended: dict[int, float] = {}
    while any(i not in ended for i in range(wait_for)) and time.monotonic() - start < timeout:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - start
        time.sleep(0.1)
    for i, proc in enumerate(procs):
        if i not in ended:
            proc.kill()
            proc.wait()
            ended[i] = time.monotonic() - start
    return [
        Node(proc.returncode, log.read_text(errors="replace"), ended[i])
        for i, (proc, log) in enumerate(zip(procs, logs, strict=True))
    ]


def lightning_envs(port: int, cwd: Path, crash_on_node1: str = "") -> list[dict[str, str]]:
    """Each node's variables for Lightning's own multi-node launch (NODE_RANK 0 and 1)."""
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    envs = [node_env(cwd, **base, NODE_RANK=str(rank)) for rank in (0, 1)]
    if crash_on_node1:
        envs[1]["DIALOGLAB_TEST_CRASH"] = crash_on_node1
    return envs
