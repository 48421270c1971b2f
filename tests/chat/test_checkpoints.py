"""`ckpt_path=best|last`: the newest run's checkpoint under ./outputs/, for chat, serve and eval."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dialoglab.chat.bot import DEFAULT_QUANTIZE, require_checkpoint
from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.experiment.runner import find_checkpoints, resolve_ckpt_path
from tests.conftest import REPO_ROOT


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> dict[str, Path]:
    """An older run with a best and a last checkpoint; a newer one that has only last.ckpt."""
    runs = tmp_path / "outputs" / "train" / "runs"
    return {
        "old_best": touch(runs / "a" / "checkpoints" / "epoch_003.ckpt", 1000),
        "old_last": touch(runs / "a" / "checkpoints" / "last.ckpt", 1100),
        "new_last": touch(runs / "b" / "checkpoints" / "last.ckpt", 2000),
        "elsewhere": touch(tmp_path / "outputs" / "notes" / "epoch_009.ckpt", 3000),
    }


def test_best_and_last_pick_the_newest_run_that_has_one(two_runs, tmp_path: Path) -> None:
    assert resolve_ckpt_path("last", tmp_path) == str(two_runs["new_last"])
    assert resolve_ckpt_path("best", tmp_path) == str(two_runs["old_best"])
    # Anything else is a path, as given; only checkpoints/ folders count as runs.
    assert resolve_ckpt_path("some/file.ckpt", tmp_path) == "some/file.ckpt"
    assert two_runs["elsewhere"] not in find_checkpoints(tmp_path)
    assert find_checkpoints(tmp_path)[0] == two_runs["new_last"]


def test_best_of_several_is_the_one_last_ckpt_records(tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "outputs" / "run" / "checkpoints"
    best = touch(folder / "epoch_001.ckpt", 1000)
    touch(folder / "epoch_004.ckpt", 2000)  # newer, not better (save_top_k > 1)
    state = {"ModelCheckpoint{'monitor': 'val/ppl'}": {"best_model_path": str(best)}}
    torch.save({"callbacks": state}, folder / "last.ckpt")
    assert resolve_ckpt_path("best", tmp_path) == str(best)


@pytest.mark.parametrize("keyword", ["best", "last"])
def test_no_run_is_an_error_naming_the_key(tmp_path: Path, keyword: str) -> None:
    touch(tmp_path / "outputs" / "run" / "checkpoints" / "step_0000010.ckpt", 1000)
    with pytest.raises(CheckpointError, match=rf"^ckpt_path={keyword}: no run under .*outputs"):
        resolve_ckpt_path(keyword, tmp_path)


def test_a_missing_ckpt_path_hints_at_best_and_last(
    two_runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path=best / ckpt_path=last"):
        require_checkpoint(OmegaConf.create({"ckpt_path": "???"}))


def test_front_ends_share_one_quantize_default() -> None:
    for name in ("chat", "serve"):
        assert OmegaConf.load(REPO_ROOT / "conf" / f"{name}.yaml").quantize == DEFAULT_QUANTIZE
    assert DEFAULT_QUANTIZE == "auto"


def test_chat_talks_to_the_last_checkpoint(chat_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "outputs" / "train" / "runs" / "r1" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").symlink_to(chat_checkpoint)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "chat.py"), "ckpt_path=last", "--once", "hello"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    missing = subprocess.run(
        [sys.executable, str(REPO_ROOT / "chat.py"), "ckpt_path=best", "--once", "hello"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "ckpt_path=best: no run under" in missing.stderr
    assert "Traceback" not in missing.stderr
