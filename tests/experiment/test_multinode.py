"""Two "nodes" on localhost, one CPU process each over gloo, started the two ways cluster users
start them: Lightning's own variables (MASTER_ADDR, MASTER_PORT, NODE_RANK) with one
`python train.py ... trainer.num_nodes=2` per node, and `torchrun --nnodes 2`.

- Every node composes its config alone; both must train in one run directory (given with
  hydra.run.dir=, or named after torchrun's --rdzv-id) and agree on the config.
- Trained (lr > 0) with 16 examples per node, they must end where one process with 32 per batch
  ends: each step's two batches are its batch, the gradient is the per-token mean over both, and
  validation and test over the whole split are sharded, never padded. Dropout is 0: each rank
  draws its own masks, which cannot match one process's. Rounding differences (gradients summed
  in another order) stay far below 1e-5 over a few steps; long fp32 runs amplify them.
- Rank 0 alone writes CSV, W&B and checkpoints.
- A node killed mid-run ends the other quickly with a clear error; `resume=auto` on both nodes
  then ends exactly where an uninterrupted two-node run ends (each rank's data position and RNG).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_GRU, free_port
from tests.experiment.test_ddp import COMPARED
from tests.experiment.test_train import run_cli
from tests.helpers.nodes import lightning_envs, lightning_node, node_env, run_nodes, torchrun_node

pytestmark = pytest.mark.slow

QUIET = ["sample_replies=0", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
SAME_GLOBAL_BATCH = [  # trained: one process (batch 32) and two nodes (16 each) must end alike
    "data=chatterbot",
    *TINY_GRU[:4],
    "model.val_generate=40",
    "model.net.dropout=0",
    "model.optimizer.lr=0.01",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    *QUIET,
]
ONE_PROCESS = [*SAME_GLOBAL_BATCH, "data.batch_size=32", "trainer=cpu"]
TWO_NODES = ["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2"]
TWO_NODE_BATCHES = [*SAME_GLOBAL_BATCH, "data.batch_size=16", *TWO_NODES]


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    root = tmp_path_factory.mktemp("one_process")
    result = run_cli("train.py", *ONE_PROCESS, "logger=csv", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (root / "outputs" / "train" / "runs").iterdir()
    return metrics_of(run_dir)


def assert_one_run_by_rank_zero(
    run_dir: Path, nodes: list, one: dict[str, float], environment: str
) -> None:
    assert [n.returncode for n in nodes] == [0, 0], (
        nodes[0].output[-3000:] + nodes[1].output[-3000:]
    )
    ranks = [json.loads(p.read_text()) for p in sorted((run_dir / "ddp").glob("rank_*.json"))]
    assert [(r["global_rank"], r["node_rank"], r["world_size"]) for r in ranks] == [
        (0, 0, 2),
        (1, 1, 2),
    ]
    assert len({r["config_sha256"] for r in ranks}) == 1 and len({r["pid"] for r in ranks}) == 2
    assert {r["cluster_environment"] for r in ranks} == {environment}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "epoch_000.ckpt",
        "last.ckpt",
    ]
    assert len(list(run_dir.glob("csv/**/metrics.csv"))) == 1
    two = metrics_of(run_dir)
    for name in COMPARED:
        assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-7), name
    print(f"\n1 process: {[round(one[n], 6) for n in COMPARED]}")
    print(
        f"2 nodes:   {[round(two[n], 6) for n in COMPARED]}; {[round(n.seconds, 1) for n in nodes]} s"
    )


def test_lightning_variables_two_nodes(one_process: dict[str, float], tmp_path: Path) -> None:
    run_dir = tmp_path / "shared_run"
    overrides = [
        f"paths.root_dir={tmp_path}",
        *TWO_NODE_BATCHES,
        "logger=many",  # W&B (offline) + CSV: rank 0 only
        f"hydra.run.dir={run_dir}",
    ]
    port = free_port()
    nodes = run_nodes([lightning_node(overrides)] * 2, lightning_envs(port, tmp_path), tmp_path)
    assert_one_run_by_rank_zero(run_dir, nodes, one_process, "LightningEnvironment")
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert not (tmp_path / "outputs" / "train" / "runs").exists()


def test_torchrun_two_nodes_share_the_rendezvous_run_dir(
    one_process: dict[str, float], tmp_path: Path
) -> None:
    overrides = [f"paths.root_dir={tmp_path}", *TWO_NODE_BATCHES, "logger=csv"]
    port = free_port()
    commands = [torchrun_node(rank, port, overrides, rdzv_id="job42") for rank in (0, 1)]
    nodes = run_nodes(commands, [node_env(tmp_path)] * 2, tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert run_dir.name == "torchrun-job42"
    assert_one_run_by_rank_zero(run_dir, nodes, one_process, "TorchElasticEnvironment")


TRAINED = [  # real training, deterministic on CPU: 2 epochs, a step checkpoint every 4 steps
    "data=chatterbot",
    *TINY_GRU[:5],
    *QUIET,
    *TWO_NODES,
    "test=false",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=4",
]


def two_node_run(root: Path, run_dir: Path, *extra: str, crash: str = "") -> list:
    """Both nodes of a training run; with `crash`, node 1 crashes as tests/helpers/crash.py says
    (the run ends when node 0 does)."""
    overrides = [f"paths.root_dir={root}", *TRAINED, f"hydra.run.dir={run_dir}", *extra]
    node1 = lightning_node(overrides, "tests/helpers/crash.py" if crash else "train.py")
    envs = lightning_envs(free_port(), root, crash)
    return run_nodes([lightning_node(overrides), node1], envs, root, wait_for=1 if crash else 2)


def final(run_dir: Path) -> tuple[float, int]:
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics_of(run_dir)["val/loss"], int(last["global_step"])


def test_killed_node_stops_the_other_then_resume_auto_matches(tmp_path: Path) -> None:
    full = two_node_run(tmp_path, tmp_path / "full")
    assert [n.returncode for n in full] == [0, 0], full[0].output[-3000:]
    expected = final(tmp_path / "full")

    run_dir = tmp_path / "crashed"
    crashed = two_node_run(tmp_path, run_dir, crash="kill_step=10")  # newest checkpoint: step 8
    assert crashed[1].returncode == -9
    assert crashed[0].returncode == 2, crashed[0].output[-3000:]
    assert "another rank stopped" in crashed[0].output and "resume=auto" in crashed[0].output
    assert crashed[0].seconds - crashed[1].seconds < 30
    assert not (run_dir / "finished").exists()

    resumed = two_node_run(tmp_path, run_dir, "resume=auto")
    assert [n.returncode for n in resumed] == [0, 0], resumed[0].output[-3000:]
    assert f"resume=auto: continuing {run_dir} from" in resumed[0].output
    got = final(run_dir)
    print(f"\nval/loss, steps: uninterrupted {expected}, killed at step 10 and resumed {got}")
    assert got[1] == expected[1]
    assert got[0] == pytest.approx(expected[0], abs=1e-6, rel=0)


def test_frozen_node_fails_the_other_after_the_configured_timeout(tmp_path: Path) -> None:
    """SIGSTOP: the node's sockets stay open, so only the process-group timeout ends the wait."""
    nodes = two_node_run(
        tmp_path, tmp_path / "run", "trainer.strategy.timeout_s=5", crash="stop_step=6"
    )
    assert nodes[0].returncode == 2, nodes[0].output[-3000:]
    assert "another rank stopped (or did not answer for trainer.strategy.timeout_s=5)" in (
        nodes[0].output
    )
    assert nodes[0].seconds < 60
