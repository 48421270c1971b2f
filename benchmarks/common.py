"""What every benchmark shares: the Figure record, timers, child processes, train.py runs.

A benchmark module exposes `run(quick: bool, ...) -> list[Figure]`; the runner calls each in a
fresh Python process, so that peak memory, thread pools and compiled kernels do not leak.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CORNELL_SLICE = REPO_ROOT.parent / "shared" / "data" / "cornell-subset"
RESULT_MARK = "@@bench-result@@ "  # prefix of the one stdout line a child writes its result on

# Everyday chat messages the reply benchmarks send, one after another.
CHAT_PROMPTS = (
    "hello!", "how are you?", "what is your name?", "do you like movies?", "where are you going?",
    "tell me a joke", "what do you think about computers?", "are you a robot?",
    "what is the meaning of life?", "i had a long day at work and i am very tired",
    "can you help me with my homework?", "what is your favorite food?",
    "do you have any hobbies?", "it is raining again today", "who made you?", "good night",
)  # fmt: skip


@dataclass
class Figure:
    """One measured number: what it is, its unit, the target it is held to, and notes."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: tuple[str, float] | None = None  # (">=" | "<=", threshold); a list from JSON
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

    def value_text(self) -> str:
        """The value as the reports print it, with its unit: "1,234 tokens/s", "n/a"."""
        value = self.value
        if value is None:
            return "n/a"
        if isinstance(value, float):
            text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        else:
            text = f"{value:,}" if isinstance(value, int) else str(value)
        return f"{text} {self.unit}".strip()

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, threshold = self.target
        return f"{'≥' if op == '>=' else '≤'} {threshold:g} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        return cls(**{k: v for k, v in data.items() if k != "met"})


def synchronized(fn: Callable[[], Any], device: Any) -> Callable[[], None]:
    """`fn`, then a wait for the device's queued work (CUDA), so that timers see all of it."""

    def call() -> None:
        fn()
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)

    return call


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


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated q-th percentile (0-100) of values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its waited-for children), in MiB."""
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def bare_trainer(**options: Any) -> Any:
    """A CPU `pytorch_lightning.Trainer` without logger, checkpoints, progress bar, model summary or sanity
    check, clipping at 50 as the recipes do (unless `options` say otherwise): what it times is
    the training loop itself."""
    import pytorch_lightning as pl

    bare = dict(accelerator="cpu", devices=1, gradient_clip_val=50.0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0)  # fmt: skip
    return pl.Trainer(**{**bare, **options})


def run_python(args: list[str], threads: int | None = None, timeout: float | None = None) -> str:
    """`python ARGS` from the repository root, offline, without W&B, with `src/` and the repo
    importable (`threads`: its OMP_NUM_THREADS); its stdout. A failure raises RuntimeError with
    the end of its output."""
    env = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore", **os.environ}  # fmt: skip
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    paths = [env.get("PYTHONPATH", ""), str(REPO_ROOT / "src"), str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise RuntimeError(f"python {' '.join(args[:3])} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def run_isolated(
    target: str, kwargs: dict[str, Any], threads: int | None = None, timeout: float = 900
) -> Any:
    """Call `module:function(**kwargs)` in a fresh Python process and return its JSON result
    (keywords the function does not take are left out)."""
    args = ["-m", "benchmarks.common", target, json.dumps(kwargs), str(threads or 0)]
    lines = run_python(args, threads, timeout).splitlines()
    return json.loads(
        next(ln for ln in reversed(lines) if ln.startswith(RESULT_MARK))[len(RESULT_MARK) :]
    )


def train_py(root: str, overrides: list[str]) -> float:
    """Run `python train.py` as a user does, on the Cornell slice with its outputs under `root`;
    its wall seconds (Python's start and imports included)."""
    start = time.perf_counter()
    run_python(["train.py", f"paths.root_dir={root}", f"data.path={CORNELL_SLICE}", "test=false",
                "logger=csv", "sample_replies=0", *overrides])  # fmt: skip
    return time.perf_counter() - start


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
    from importlib.metadata import version

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": version("pytorch-lightning"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def load_average() -> float:
    """The 1-minute load average (nan where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
