"""What every benchmark shares: the Figure record, timers, peak RSS, isolated child processes.

A benchmark module exposes `run(quick: bool) -> list[Figure]`. The runner (`python -m
dialoglab.bench`) calls each in a child process of its own, so that peak memory, thread pools and
compiled kernels of one measurement do not leak into the next.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
CORNELL_SLICE = REPO_ROOT.parent / "shared" / "data" / "cornell-subset"
RESULT_MARK = "@@bench-result@@ "  # prefix of the one stdout line a child writes its result on

OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}
SYMBOLS = {">=": "≥", "<=": "≤"}

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
    """One measured number: what it is, its unit, the target it is held to, and how to redo it."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: tuple[str, float] | None = None  # (">=" | "<=", threshold)
    note: str = ""
    bench: str = ""  # filled in by the runner: which `--only` name reproduces it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is no target or no numeric value."""
        if self.target is None or not isinstance(self.value, int | float):
            return None
        if isinstance(self.value, float) and math.isnan(self.value):
            return None
        op, threshold = self.target
        return bool(OPS[op](self.value, threshold))

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, threshold = self.target
        return f"{SYMBOLS[op]} {threshold:g}{' ' + self.unit if self.unit else ''}"

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


# -----------------------------------------------------------------------------
# Timing


def synchronized(fn: Callable[[], Any], device: Any) -> Callable[[], None]:
    """`fn` followed by a wait for the device's queued work (CUDA), so that timers see all of it."""

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
    """Like time_calls for several functions, alternating them call by call.

    On a shared machine the load drifts; interleaving makes every contender see the same drift,
    so their ratio is fairer than timing one block after the other. `settle` untimed calls run
    right before each timed one, so that it finds the caches as a run of that contender alone
    leaves them (a training step after another network's step re-reads its weights and
    optimizer state from memory: ~10 % slower for the full-size gru_attn step).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats):
        # A B C, then C B A, ...: no contender always goes first (in an A/B of two equal-cost
        # steps, the one listed first read ~5 % slower with a fixed order).
        for name in names if round_ % 2 == 0 else names[::-1]:
            fn = fns[name]
            for _ in range(settle):
                fn()
            start = time.perf_counter()
            fn()
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


# -----------------------------------------------------------------------------
# Memory


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Current resident set size in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)


# -----------------------------------------------------------------------------
# Isolated child processes


def bench_env() -> dict[str, str]:
    """Environment of benchmark children: offline, no W&B, quiet tokenizers."""
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONWARNINGS", "ignore")
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_isolated(target: str, kwargs: dict[str, Any] | None = None, timeout: float = 900) -> Any:
    """Call `module:function(**kwargs)` in a fresh Python process and return its JSON result.

    The child adds `peak_rss_mb` (its own peak RSS) and `rss_after_imports_mb` when the result is
    a dict. A failure in the child raises RuntimeError carrying the end of its output.
    """
    cmd = [sys.executable, "-m", "dialoglab.bench.common", target, json.dumps(kwargs or {})]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=bench_env(), check=False
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
    raise RuntimeError(f"{target} failed (exit {proc.returncode}):\n{tail}")


def apply_thread_setting() -> None:
    """torch intra-op threads from DIALOGLAB_BENCH_THREADS (the runner's --threads), if set."""
    threads = os.environ.get("DIALOGLAB_BENCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _child(target: str, kwargs_json: str) -> None:
    from dialoglab.experiment.cpu_heap import keep_freed_memory

    apply_thread_setting()
    keep_freed_memory()  # as `python train.py` runs (conf/train.yaml keep_freed_memory: true)
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    gc.collect()
    base_rss = rss_mb()
    result = getattr(module, func_name)(**json.loads(kwargs_json))
    if isinstance(result, dict):
        result.setdefault("peak_rss_mb", peak_rss_mb())
        result.setdefault("rss_after_imports_mb", base_rss)
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):  # a Figure (its class is __main__.Figure in the child)
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# -----------------------------------------------------------------------------
# Environment


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Device, CPU, library versions and thread counts, for the results header."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": installed("lightning"),
        "transformers": installed("transformers"),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}")
