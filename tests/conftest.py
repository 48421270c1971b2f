"""Shared fixtures: real configs from conf/ composed into a temporary run directory, and one tiny
trained gru_attn checkpoint for the whole session."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from dialoglab.experiment import resolvers  # noqa: F401
from dialoglab.experiment.runner import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
CORNELL_SUBSET = REPO_ROOT.parent / "shared" / "data" / "cornell-subset"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Child processes often get a fresh HOME (no user config); they keep the real cache directory, so
# they load the C++ extension `make install` built instead of building their own.
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from two threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cornell_subset() -> Path:
    """The real Cornell slice beside the checkout; tests that need it skip when it is absent."""
    if not (CORNELL_SUBSET / "movie_lines.txt").is_file():
        pytest.skip(f"the shared Cornell slice is absent ({CORNELL_SUBSET})")
    return CORNELL_SUBSET


def compose_config(
    config_name: str, overrides: list[str], root: Path, output_dir: Path | None = None
) -> DictConfig:
    """Compose conf/<config_name>.yaml like the CLI does, rooted at `root` (data, outputs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"paths.root_dir={root}", *overrides],
            return_hydra_config=True,
        )
    output_dir = output_dir or root / "run"
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg("train", ["model=gru_attn", ...]) -> a composed config rooted in tmp_path."""

    def _make(config_name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
        return compose_config(config_name, overrides, tmp_path, output_dir)

    yield _make
    GlobalHydra.instance().clear()


# A quiet CPU run: CSV logging, two sample replies, no progress bar or model summary.
QUIET_CPU_RUN = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "sample_replies=2",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]
# Small and fast: a tiny model, a couple of batches.
TINY_GRU = [
    "model.net.hidden_size=16",
    "model.net.encoder_n_layers=1",
    "model.net.decoder_n_layers=1",
    "model.val_generate=16",
    *QUIET_CPU_RUN,
]


def run_script(
    script: str,
    *overrides: str,
    cwd: Path,
    env: dict[str, str],
    timeout: int = 300,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess:
    """Run an entry script (train.py, eval.py, ...) as a user would, rooted at `cwd`; with
    `merge_stderr`, stderr goes into stdout in the order a terminal shows them."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), f"paths.root_dir={cwd}", *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    command: list[str], health_url: str, log: Path, cwd: Path, env: dict[str, str], timeout: float
) -> Iterator[None]:
    """Start `command` (output to `log`), wait until `health_url` answers 200, stop it after.

    Fails the test with the log's tail when the process exits or is not up within `timeout` s.
    """
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    pytest.fail(f"{command[1]} exited with {process.returncode}: {_tail(log)}")
                try:
                    with urllib.request.urlopen(health_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[1]} did not come up in {timeout:.0f} s: {_tail(log)}")
                time.sleep(0.3)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


# One epoch of a few batches on chatterbot-corpus: the model is poor, but real and quick to make.
TINY_CHAT_MODEL = [
    "data=chatterbot",
    "data.context_turns=2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=1",
    "test=false",
    *TINY_GRU,
    "sample_replies=0",
]


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny gru_attn checkpoint (hidden 16, context_turns 2), trained once per session."""
    from dialoglab.experiment.train import train

    root = tmp_path_factory.mktemp("chat_model")
    cfg = compose_config("train", TINY_CHAT_MODEL, root, output_dir=root / "outputs" / "run")
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    summary = json.loads((root / "outputs" / "run" / "metrics.json").read_text())
    path = Path(
        summary["best_checkpoint"] or root / "outputs" / "run" / "checkpoints" / "last.ckpt"
    )
    assert path.is_file(), path
    return path
