"""What the entry points print, run as a user would: one line per event, errors once and as text,
`--help` listing only the groups an entry point accepts, `make help` and `make ... ARGS=`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import REPO_ROOT, TINY_GRU, run_script

# What Lightning and W&B print that says nothing to a dialoglab user (see experiment/console.py).
NOISE = (
    "litlogger",
    "💡",
    "Trainer already configured with model summary callbacks",
    "The anonymous setting has no effect",
    "Run history:",
    "Run summary:",
    "Restoring states from the checkpoint",
    "Test metric",  # Lightning's test table: the run report prints the metrics once
    "FLOPs",
    "LikelihoodMetrics",  # metric containers in the model summary
)
LOG_LINE = re.compile(r"^\[[\d\-: ,]+\]\[[\w.]+\]\[\w+\] - (.*)$")
TINY_RUN = [
    "data=chatterbot",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "sample_replies=1",
    "accel=none",  # no C++ extension build: what is printed is the point here
    *(o for o in TINY_GRU if not o.startswith(("logger=", "callbacks.model_summary"))),
]


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user with no W&B account (W&B decides offline by itself)."""
    env = {**os.environ, "HOME": str(home)}
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SILENT"):
        env.pop(name, None)
    return env


def test_multirun_prints_one_line_per_event(tmp_path: Path) -> None:
    """Two W&B + CSV jobs with the model summary on: no third-party noise, no W&B run summary,
    each log message once per job, the data summary and the W&B offline line once per job."""
    result = run_script(
        "train.py", "hydra.mode=MULTIRUN", "logger=many", "seed=1,2", *TINY_RUN,
        cwd=tmp_path, env=user_env(tmp_path), merge_stderr=True,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed:\n{out[-3000:]}"
    assert not [line for line in out.splitlines() if line.startswith("wandb:")], out[-3000:]
    assert out.count("data: train ") == 2
    assert out.count("W&B: ") == 2 and "wandb sync" in out
    assert out.count("params: ") == 2 and "net.embedding" in out  # the model summary, compact
    jobs = re.split(r"\[HYDRA\] \t#\d+ : ", out)[1:]
    assert len(jobs) == 2
    for job in jobs:
        messages = Counter(m.group(1) for m in map(LOG_LINE.match, job.splitlines()) if m)
        assert messages and max(messages.values()) == 1, messages.most_common(3)


def test_user_error_is_printed_once_as_text(tmp_path: Path) -> None:
    """A bad persona JSONL row: one `error:` line with the accepted shapes' brackets intact (rich
    markup would swallow `[str, ...]`), exit code 2, and the error in the run's log file."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n')
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", "data=persona", f"data.path={bad}", "logger=csv", f"hydra.run.dir={run_dir}",
        cwd=tmp_path, env=user_env(tmp_path), merge_stderr=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if "no known keys" in line]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(f"error: {bad}:1: no known keys")
    assert '{"persona": str | [str, ...], "turns": [str, ...]}' in lines[0]
    assert "Traceback" not in result.stdout
    assert "no known keys" in (run_dir / "train.log").read_text()


def groups_in_help(text: str) -> set[str]:
    section = text.split("== Config groups (group=option) ==", 1)[1].split("\n\n", 1)[0]
    return {line.split(":", 1)[0] for line in section.strip().splitlines()}


def test_help_lists_only_the_groups_an_entry_point_accepts(tmp_path: Path) -> None:
    train = run_script("train.py", "--help", cwd=tmp_path, env=user_env(tmp_path))
    assert train.returncode == 0, train.stderr[-2000:]
    groups = groups_in_help(train.stdout)
    assert {"data", "model", "trainer", "logger", "callbacks", "experiment"} <= groups
    assert not groups & {"decoding", "wandb_sweep", "hydra"}, groups
    assert "data: chatterbot, cornell, persona (default: cornell)" in train.stdout
    chat = subprocess.run(
        [sys.executable, str(REPO_ROOT / "chat.py"), "--help"],
        cwd=tmp_path, env=user_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert groups_in_help(chat.stdout) == {"accel", "decoding"}, chat.stdout[:1000]
    assert chat.stdout.startswith("usage: python chat.py ")


def make(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_make_help_shows_values_and_targets_pass_args() -> None:
    assert "torch==2.13.0" in make("help")
    assert "torch==9.9.9" in make("help", "TORCH_VERSION=9.9.9")
    assert "$(TORCH_VERSION)" not in make("help")
    assert "CKPT              last" in make("help", "CKPT=last")
    args = "ARGS=trainer.max_epochs=3 logger=csv"
    assert (
        make("-n", "train", args)
        .strip()
        .endswith("train.py model=gru_attn trainer.max_epochs=3 logger=csv")
    )
    assert (
        make("-n", "quickstart", args)
        .strip()
        .endswith("train.py experiment=quickstart trainer.max_epochs=3 logger=csv")
    )
    for target, script in (("eval", "eval.py"), ("chat", "chat.py"), ("serve", "serve.py")):
        line = make("-n", target, "CKPT=last", "ARGS=quantize=none").strip()
        assert line.endswith(f"{script} ckpt_path=last quantize=none"), line
    web = make("-n", "web", "CKPT=last", "ARGS=quantize=none").split()
    assert web[-4:] == ["app.py", "--", "ckpt_path=last", "quantize=none"], web
