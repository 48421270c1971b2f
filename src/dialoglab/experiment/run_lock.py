"""One training process per run directory: a lock file held for as long as the run trains.

`resume=auto` picks the newest unfinished run of a config; a run that is still training is
unfinished too, and two `resume=auto` commands started at once would pick the same crashed run.
Each run holds `<run dir>/run.lock` (an OS file lock, dropped by the kernel when the process
dies, so a killed run never leaves a stale lock); `resume=auto` skips runs whose lock is held.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = "run.lock"
OWNER_FILE = "run.lock.owner"


class RunLock:
    """The held lock of one run directory; `release()`, the run's end (`mark_finished`) or the
    process's end frees it."""

    def __init__(self, run_dir: Path, lock: FileLock) -> None:
        self.run_dir = run_dir
        self._lock = lock

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)
        if _HELD.get(self.run_dir.resolve()) is self:
            del _HELD[self.run_dir.resolve()]


# The locks this process holds, by run dir. Runs in one process follow each other (the jobs of a
# multirun, tests): a new run in a directory takes over the lock an earlier one left behind (an
# exception's traceback can keep that run's lock alive).
_HELD: dict[Path, RunLock] = {}


def try_lock(run_dir: Path) -> RunLock | None:
    """Take `run_dir`'s lock without waiting; None when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:
        _HELD.pop(key).release()
    lock = FileLock(str(run_dir / LOCK_FILE), timeout=0, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        return None
    (run_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    _HELD[key] = RunLock(run_dir, lock)
    return _HELD[key]


def release_lock(run_dir: Path) -> None:
    """Drop this process's lock of `run_dir` (a no-op when it holds none)."""
    held = _HELD.get(run_dir.resolve())
    if held is not None:
        held.release()


def holder(run_dir: Path) -> str:
    """'pid N' of the process that last took `run_dir`'s lock ('another process' if unknown)."""
    try:
        return f"pid {int((run_dir / OWNER_FILE).read_text())}"
    except (OSError, ValueError):
        return "another process"
