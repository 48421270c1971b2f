"""What every benchmark shares: the Figure record, timers, peak RSS, isolated child processes.

A benchmark module exposes `run(quick: bool, ...) -> list[Figure]`. The runner (`python -m
benchmarks`) calls each in a fresh Python process, so that the peak memory, thread pools and
compiled kernels of one measurement do not leak into the next.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CORNELL_SLICE = REPO_ROOT.parent / "shared" / "data" / "cornell-subset"
RESULT_MARK = "@@bench-result@@ "  # prefix of the one stdout line a child writes its result on

# Everyday chat messages the reply benchmarks send, one after another.
CHAT_PROMPTS = (
    "hello!",
    "how are you?",
    "what is your name?",
    "do you like movies?",
    "where are you going?",
    "tell me a joke",
    "what do you think about computers?",
    "are you a robot?",
    "what is the meaning of life?",
    "i had a long day at work and i am very tired",
    "can you help me with my homework?",
    "what is your favorite food?",
    "do you have any hobbies?",
    "it is raining again today",
    "who made you?",
    "good night",
)


@dataclass
class Figure:
    """One measured number: what it is, its unit, the target it is held to, and notes."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: tuple[str, float] | None = None  # (">=" | "<=", threshold)
    note: str = ""
    bench: str = ""  # filled in by the runner: which `--only` name reproduces it

    @property
    def met(self) -> bool | None:
        """True/False against the target; None without a target or a numeric value."""
        value = self.value
        if self.target is None or not isinstance(value, int | float) or math.isnan(value):
            return None
        op, threshold = self.target
        return bool(value >= threshold if op == ">=" else value <= threshold)

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, threshold = self.target
        unit = f" {self.unit}" if self.unit else ""
        return f"{'≥' if op == '>=' else '≤'} {threshold:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = list(self.target) if self.target else None
        out["met"] = self.met
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        data = {k: v for k, v in data.items() if k != "met"}
        if data.get("target"):
            data["target"] = (data["target"][0], float(data["target"][1]))
        return cls(**data)


def synchronized(fn: Callable[[], Any], device: Any) -> Callable[[], None]:
    """`fn`, then a wait for the device's queued work (CUDA), so that timers see all of it."""

    def call() -> None:
        fn()
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)

    return call


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, settle: int = 0
) -> dict[str, list[float]]:
    """Like time_calls for several functions, alternating them call by call (A B C, C B A, ...).

    On a shared machine the load drifts; interleaving makes every contender see the same drift.
    `settle` untimed calls run right before each timed one, so that it finds the caches as a run
    of that contender alone leaves them.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            for _ in range(settle):
                fns[name]()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated q-th percentile (0-100) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its waited-for children), in MiB."""
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def bench_env(threads: int | None = None) -> dict[str, str]:
    """Environment of benchmark children: offline, no W&B, `src/` and the repo importable."""
    quiet = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env = {**quiet, "PYTHONWARNINGS": "ignore", **os.environ}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    paths = [env.get("PYTHONPATH", ""), str(REPO_ROOT / "src"), str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def run_isolated(
    target: str, kwargs: dict[str, Any], threads: int | None = None, timeout: float = 900
) -> Any:
    """Call `module:function(**kwargs)` in a fresh Python process and return its JSON result
    (keywords the function does not take are left out). A failure raises RuntimeError with the
    end of the child's output."""
    args = [target, json.dumps(kwargs), str(threads or 0)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.common", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=bench_env(threads),
        cwd=REPO_ROOT,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
    raise RuntimeError(f"{target} failed (exit {proc.returncode}):\n{tail}")


def _child(target: str, kwargs_json: str, threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module_name, _, func_name = target.partition(":")
    fn = getattr(importlib.import_module(module_name), func_name)
    accepted = inspect.signature(fn).parameters
    result = fn(**{k: v for k, v in json.loads(kwargs_json).items() if k in accepted})
    if isinstance(result, dict):
        result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.flush()
    as_json = json.dumps(result, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o))
    print(RESULT_MARK + as_json, flush=True)


def environment() -> dict[str, Any]:
    """Device, CPU, library versions and thread counts, for the results header."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    names = [ln for ln in text.splitlines() if ln.startswith("model name")]
    return {
        "cpu": names[0].split(":", 1)[1].strip() if names else platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": installed("lightning"),
        "transformers": installed("transformers"),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def load_average() -> float:
    """The 1-minute load average (nan where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
