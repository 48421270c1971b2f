"""One process per run directory: `resume=auto` never takes a run another process holds, and
two `resume=auto` commands started at once never take the same run."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from dialoglab.errors import ConfigError
from dialoglab.experiment.resume import find_unfinished_run, prepare_resume
from tests.conftest import REPO_ROOT
from tests.experiment.test_resumable import make_run

CLAIM = """
import sys, time
from pathlib import Path
from dialoglab.experiment.resume import find_unfinished_run
found = find_unfinished_run(Path(sys.argv[1]), "k1", exclude=Path(sys.argv[1]) / "new", claim=True)
print(found[0].name if found else "none", flush=True)
time.sleep(float(sys.argv[2]))
"""
HOLD = """
import sys, time
from pathlib import Path
from dialoglab.experiment.run_lock import try_lock
assert try_lock(Path(sys.argv[1])) is not None
print("held", flush=True)
time.sleep(60)
"""


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )


@contextlib.contextmanager
def held_elsewhere(run_dir: Path) -> Iterator[int]:
    """Another process holds `run_dir`'s lock until the block ends (then it is SIGKILLed)."""
    proc = python(HOLD, str(run_dir))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_two_resume_auto_commands_at_once_take_different_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "older", "k1")
    make_run(tmp_path, "newer", "k1")
    procs = [python(CLAIM, str(tmp_path), "3") for _ in range(3)]  # all search at once
    chosen = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert chosen == ["newer", "none", "older"]


def test_resume_auto_skips_a_run_in_use_until_its_process_ends(tmp_path: Path) -> None:
    older = make_run(tmp_path, "older", "k1")
    newer = make_run(tmp_path, "newer", "k1")
    with held_elsewhere(newer):  # still training, or being resumed by another command
        found = find_unfinished_run(tmp_path, "k1", exclude=tmp_path / "new", claim=True)
        assert found is not None and found[0] == older
        found[3].release()
    found = find_unfinished_run(tmp_path, "k1", exclude=tmp_path / "new", claim=True)
    assert found is not None and found[0] == newer  # the killed holder left no stale lock
    found[3].release()


def test_a_run_directory_in_use_is_refused(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("train", ["data=chatterbot", "logger=csv"])
    with (
        held_elsewhere(Path(cfg.paths.output_dir)) as pid,
        pytest.raises(ConfigError, match=rf"is in use by pid {pid}.*hydra\.run\.dir"),
    ):
        prepare_resume(cfg)
    plan = prepare_resume(make_cfg("train", ["data=chatterbot", "logger=csv"]))
    assert plan.lock is not None
    plan.lock.release()
