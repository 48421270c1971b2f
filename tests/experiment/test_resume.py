"""Crash and resume as a user suffers it: `train.py` SIGKILLed mid-epoch (or at an epoch boundary),
then `resume=auto`, must end exactly where an uninterrupted run ends (same val/loss, same steps)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dialoglab.experiment.resume import find_unfinished_run
from tests.conftest import REPO_ROOT, TINY_GRU
from tests.experiment.test_train import run_cli

pytestmark = pytest.mark.slow

# chatterbot: some 50 training batches an epoch at batch_size 32; two epochs of optimizer steps.
RUN = [
    "data=chatterbot",
    *TINY_GRU,
    "sample_replies=0",
    "test=false",
    "seed=1234",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=4",
]
KILL_MID_EPOCH = "kill_step=30"  # the newest checkpoint is then step 28: steps 29-30 are redone
KILL_AT_EPOCH_START = "kill_epoch=1"  # right after epoch 0's validation and checkpoints


def crash(how: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """train.py with a callback that SIGKILLs (or NaNs) it, kept out of the run's config."""
    env = {**os.environ, "DIALOGLAB_TEST_CRASH": how, "HOME": str(cwd)}
    script = REPO_ROOT / "tests" / "helpers" / "crash.py"
    return subprocess.run(
        [sys.executable, str(script), f"paths.root_dir={cwd}", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def runs(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "train" / "runs").iterdir())


def final(run_dir: Path) -> tuple[float, int]:
    """(final val/loss, optimizer steps) of a finished run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics["val/loss"], int(last["global_step"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[float, int]:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("train.py", *RUN, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return final(runs(root)[0])


@pytest.mark.parametrize("kill", [KILL_MID_EPOCH, KILL_AT_EPOCH_START], ids=["mid_epoch", "epoch"])
def test_sigkill_then_resume_auto_matches_uninterrupted_run(
    kill: str, uninterrupted: tuple[float, int], tmp_path: Path
) -> None:
    crashed = crash(kill, *RUN, cwd=tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    (crashed_dir,) = runs(tmp_path)
    assert (crashed_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (crashed_dir / "finished").exists()
    rows_before = list(csv.DictReader((crashed_dir / "csv" / "metrics.csv").open()))

    resumed = run_cli("train.py", *RUN, "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume=auto: continuing" in resumed.stdout + resumed.stderr

    # It continued in the crashed run's directory; the new invocation's directory says where.
    new_dir = next(d for d in runs(tmp_path) if d != crashed_dir)
    assert (new_dir / "resumed_into.txt").read_text().strip() == str(crashed_dir)
    assert (crashed_dir / "finished").exists()
    loss, steps = final(crashed_dir)
    print(f"\nfinal val/loss: uninterrupted {uninterrupted[0]!r}, resumed {loss!r}; steps {steps}")
    assert steps == uninterrupted[1] > 60  # two epochs, past the kill
    assert loss == pytest.approx(uninterrupted[0], abs=1e-6, rel=0)

    # CSV metrics were appended to, not replaced.
    rows_after = list(csv.DictReader((crashed_dir / "csv" / "metrics.csv").open()))
    assert len(rows_after) > len(rows_before) > 0
    epochs = {int(float(r["epoch"])) for r in rows_after if r.get("val/loss")}
    assert epochs == {0, 1}

    # Finished: a further resume=auto would start afresh instead of picking this run again.
    key = (crashed_dir / "resume_key.txt").read_text().strip()
    assert find_unfinished_run(crashed_dir.parent, key, exclude=tmp_path / "elsewhere") is None


def test_resume_auto_skips_a_corrupt_last_checkpoint(
    uninterrupted: tuple[float, int], tmp_path: Path
) -> None:
    crashed = crash(KILL_MID_EPOCH, *RUN, cwd=tmp_path)
    assert crashed.returncode == -signal.SIGKILL
    (crashed_dir,) = runs(tmp_path)
    last = crashed_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # as a kill in the middle of a copy would leave it

    resumed = run_cli("train.py", *RUN, "resume=auto", cwd=tmp_path)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert f"skipping {last}" in out and "not a readable PyTorch checkpoint" in out
    assert "step_0000028.ckpt" in out  # the previous good checkpoint
    assert final(crashed_dir)[1] == uninterrupted[1]


DDP_RUN = [*RUN, "trainer=ddp_cpu", "trainer.max_epochs=1"]  # two processes over gloo


def test_ddp_sigkill_then_resume_auto_matches_uninterrupted_run(tmp_path: Path) -> None:
    """Rank 0 SIGKILLed mid-epoch; rank 1 stops (its peer is gone). resume=auto restores each
    rank's data position in its shard and its own RNG states: the run ends as one never killed."""
    (tmp_path / "full").mkdir()
    full = run_cli("train.py", *DDP_RUN, cwd=tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    expected = final(runs(tmp_path / "full")[0])

    crashed = crash("kill_step=10", *DDP_RUN, cwd=tmp_path)  # newest checkpoint: step 8
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    (crashed_dir,) = runs(tmp_path)
    resumed = run_cli("train.py", *DDP_RUN, "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume=auto: continuing {crashed_dir}" in resumed.stdout + resumed.stderr
    loss, steps = final(crashed_dir)
    print(f"\nDDP final val/loss: uninterrupted {expected[0]!r}, resumed {loss!r}; steps {steps}")
    assert steps == expected[1]
    assert loss == pytest.approx(expected[0], abs=1e-6, rel=0)
