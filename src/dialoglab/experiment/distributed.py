"""Data-parallel training that stays correct under Hydra: every rank runs rank 0's resolved config.

Lightning's DDP launcher starts ranks 1..N-1 by re-running `sys.argv`. Under a Hydra multirun that
command is the whole `-m` sweep, so rank 1 runs its own sweep and may train with other
hyperparameters than rank 0; under pytest it re-runs pytest. `ResolvedConfigDDPStrategy` replaces
that launcher: rank 0 writes its resolved config to `<run dir>/ddp/config.yaml` and starts each
other local rank as `python -m dialoglab.experiment.ddp_worker <that file>`, which calls the same
`train(cfg)`. Every rank then checks, over the process group, that all ranks hold the same config
digest (and writes it to `<run dir>/ddp/rank_<r>.json`), so a mismatch fails loudly instead of
training silently wrong. When a cluster starts the processes itself (SLURM, torchrun, nodes
started by hand with MASTER_ADDR/NODE_RANK), Lightning's own cluster environment is used unchanged
and only the check runs; a mismatch names the keys that differ. A collective that fails because
another rank died (or did not answer within `timeout_s`) ends the run with a `TrainingError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch.nn.parallel import DistributedDataParallel

from dialoglab.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

DDP_DIR = "ddp"
WORKER_MODULE = "dialoglab.experiment.ddp_worker"
# What the launcher sets in rank 0's environment; restored afterwards so that the next job of a
# multirun starts a fresh process group instead of believing it is already a launched rank.
_ENV_KEYS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
)


# Config keys that may differ between ranks: loggers write on global rank 0 only, and each node
# of a multi-node launch composes its own W&B run id and name (rank 0's are the ones used).
RANK_LOCAL_KEYS = ("logger",)


def shared_part(config: dict[str, Any] | DictConfig) -> dict[str, Any]:
    """The resolved config all ranks must agree on (without `RANK_LOCAL_KEYS`)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    assert isinstance(config, dict)
    return {k: v for k, v in config.items() if k not in RANK_LOCAL_KEYS}


def config_digest(config: dict[str, Any] | DictConfig) -> str:
    """sha256 of the part of a resolved config every rank must share (key order does not matter)."""
    blob = json.dumps(shared_part(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            found += config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


class _ChildObserver(threading.Thread):
    """Lightning's child-process watchdog, but stoppable: once rank 0 handles an error or ends
    the run itself, a child that exits non-zero must not SIGKILL rank 0 (that would kill a sweep)."""

    def __init__(self, procs: list[subprocess.Popen], period: float = 2.0) -> None:
        super().__init__(daemon=True, name="dialoglab-ddp-observer")
        self.procs = procs
        self.period = period
        self.stopped = threading.Event()
        self.main_pid = os.getpid()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            codes = [p.poll() for p in self.procs]
            if all(code == 0 for code in codes):
                return
            failed = [
                (p.pid, c) for p, c in zip(self.procs, codes, strict=True) if c not in (None, 0)
            ]
            if failed and not self.stopped.is_set():
                log.error(
                    "DDP rank process(es) %s exited with an error while rank 0 was running; "
                    "stopping all ranks (rank 0 would otherwise wait forever in a collective)",
                    failed,
                )
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                os.kill(self.main_pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self.stopped.set()


class ResolvedConfigLauncher(_SubprocessScriptLauncher):
    """Starts local ranks 1..N-1 with rank 0's resolved config instead of re-running `sys.argv`."""

    def __init__(self, strategy: ResolvedConfigDDPStrategy) -> None:
        assert strategy.cluster_environment is not None
        super().__init__(strategy.cluster_environment, strategy.num_processes, strategy.num_nodes)
        self.strategy = strategy
        self.observer: _ChildObserver | None = None
        self.saved_env: dict[str, str | None] | None = None
        self.saved_threads: int | None = None

    def launch(
        self, function: Any, *args: Any, trainer: pl.Trainer | None = None, **kwargs: Any
    ) -> Any:
        if self.strategy.run_config is None:  # not started by dialoglab's train(): Lightning's way
            return super().launch(function, *args, trainer=trainer, **kwargs)
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        if not self.cluster_environment.creates_processes_externally:
            self.saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
            self.saved_threads = torch.get_num_threads()
            self._start_children()
            self.observer = _ChildObserver(self.procs)
            self.observer.start()
        # like Lightning: share the CPU cores between the processes of this node
        if "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // self.num_processes)
            torch.set_num_threads(threads)
            os.environ["OMP_NUM_THREADS"] = str(threads)
        return function(*args, **kwargs)

    def _start_children(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        config_path = self.strategy.write_run_config()
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command = [sys.executable, "-m", WORKER_MODULE, str(config_path)]
            log.info("starting DDP local rank %d: %s", local_rank, " ".join(command))
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=os.getcwd()))

    def kill(self, signum: Any) -> None:
        if self.observer is not None:
            self.observer.stop()
        super().kill(signum)

    def finish(self, ok: bool, timeout: float = 600.0) -> None:
        """After the run on rank 0: let the other ranks end, drop the process group, restore env."""
        if self.observer is not None:
            self.observer.stop()
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout if ok else 15.0)
            except subprocess.TimeoutExpired:
                log.warning("DDP rank process %d did not exit; killing it", proc.pid)
                proc.kill()
                proc.wait()
            if ok and proc.returncode != 0:
                log.warning("DDP rank process %d exited with code %s", proc.pid, proc.returncode)
        self.procs = []
        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        if self.saved_env is not None:
            for key, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self.saved_env = None
        if self.saved_threads is not None:
            torch.set_num_threads(self.saved_threads)
            self.saved_threads = None


class ResolvedConfigDDPStrategy(DDPStrategy):
    """`DDPStrategy` whose ranks all run rank 0's resolved config and verify it (see module doc).

    Configure it like `DDPStrategy` (`process_group_backend`, `find_unused_parameters`, ...);
    `timeout_s` bounds how long a rank waits in a collective for the others (torch's default is
    30 min) before it fails instead of hanging on a dead peer. `train()` hands it the run config
    through `attach_run_config`.
    """

    def __init__(self, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> None:
        if timeout_s is not None:
            kwargs["timeout"] = timedelta(seconds=float(timeout_s))
        super().__init__(*args, **kwargs)
        self.run_config: dict[str, Any] | None = None
        self.output_dir: Path | None = None

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":
            self._launcher = ResolvedConfigLauncher(self)
        else:
            super()._configure_launcher()

    def _setup_model(self, model: torch.nn.Module) -> DistributedDataParallel:
        """DDP built on the current stream. Lightning 2.6 builds it on a side stream (for CUDA
        graph capture of the whole network, which dialoglab does not do); its AccumulateGrad
        nodes then sit on that stream while backward runs on the default one, and torch warns
        of needless synchronisation at every backward (seen on an H200, Lightning 2.6.6)."""
        device_ids = self.determine_ddp_device_ids()
        return DistributedDataParallel(module=model, device_ids=device_ids, **self._ddp_kwargs)

    def write_run_config(self) -> Path:
        assert self.run_config is not None
        folder = (self.output_dir or Path.cwd()) / DDP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.yaml"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        OmegaConf.save(OmegaConf.create(self.run_config), tmp)
        tmp.replace(path)
        return path

    def setup_environment(self) -> None:
        super().setup_environment()  # the process group exists from here on
        self.check_same_config()

    def check_same_config(self) -> None:
        """Every rank records its config digest; all ranks fail, naming the keys, if any differ."""
        if self.world_size < 2 or not dist.is_initialized():
            return
        digest = config_digest(self.run_config) if self.run_config is not None else ""
        if self.output_dir is not None:
            self._write_rank_record(digest)
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) == 1:
            log.info("DDP: %d ranks share config %s", self.world_size, digest[:12])
            return
        configs: list[Any] = [None] * self.world_size
        dist.all_gather_object(configs, shared_part(self.run_config or {}))
        raise ConfigError(mismatch_message(configs, digests))

    def _write_rank_record(self, digest: str) -> None:
        assert self.output_dir is not None
        folder = self.output_dir / DDP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "global_rank": self.global_rank,
            "local_rank": self.local_rank,
            "node_rank": self.node_rank,
            "world_size": self.world_size,
            "cluster_environment": type(self.cluster_environment).__name__,
            "config_sha256": digest,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        (folder / f"rank_{self.global_rank}.json").write_text(json.dumps(record, indent=2))

    def on_exception(self, exception: BaseException) -> None:
        launcher = self._launcher
        if isinstance(launcher, ResolvedConfigLauncher) and launcher.observer is not None:
            launcher.observer.stop()
        super().on_exception(exception)


def mismatch_message(configs: list[dict[str, Any]], digests: list[str]) -> str:
    """What differs between rank 0's config and the others', and how to launch them alike."""
    configs = [shared_part(c) for c in configs]
    lines = []
    for rank, config in enumerate(configs[1:], start=1):
        for key in config_differences(configs[0], config)[:5]:
            ours = OmegaConf.select(OmegaConf.create(configs[0]), key, default=None)
            theirs = OmegaConf.select(OmegaConf.create(config), key, default=None)
            lines.append(f"{key}: rank 0 has {ours!r}, rank {rank} has {theirs!r}")
    hint = (
        "Launch every rank with the same resolved config: use trainer=ddp / trainer=ddp_cpu, "
        "whose strategy does that on one machine."
    )
    if any(line.startswith("paths.") for line in lines):
        hint += (
            " Nodes started separately (MASTER_ADDR/NODE_RANK, torchrun without --rdzv-id) "
            "need the same run directory: pass hydra.run.dir=<shared dir> on every node "
            "(under srun, or torchrun --rdzv-id, it is named after the job by itself)."
        )
    return (
        "DDP ranks run different configs (config sha256 per rank: "
        f"{dict(enumerate(d[:12] for d in digests))}): " + "; ".join(lines) + ". " + hint
    )


def attach_run_config(trainer: pl.Trainer, cfg: DictConfig) -> None:
    """Give a `ResolvedConfigDDPStrategy` the resolved run config (a no-op for other strategies)."""
    strategy = trainer.strategy
    if isinstance(strategy, ResolvedConfigDDPStrategy):
        strategy.run_config = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        output_dir = OmegaConf.select(cfg, "paths.output_dir")
        strategy.output_dir = Path(output_dir) if output_dir else None


def release(trainer: pl.Trainer, ok: bool) -> None:
    """End of a run on rank 0: wait for the ranks it started, then clean up for the next job."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, ResolvedConfigLauncher):
        launcher.finish(ok)


# How torch's gloo / NCCL process groups report a rank that died or stopped answering.
PEER_FAILURE_MARKS = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Timed out waiting",
    "timed out",
    "Application timeout",
    "Socket Timeout",
    "NCCL communicator was aborted",
)


def peer_failure(err: BaseException, cfg: DictConfig, rank: int) -> TrainingError | None:
    """A clear error for a collective that failed because another rank is gone (None otherwise)."""
    text = str(err)
    if not isinstance(err, RuntimeError) or not any(m in text for m in PEER_FAILURE_MARKS):
        return None
    timeout = OmegaConf.select(cfg, "trainer.strategy.timeout_s", default=None)
    timed_out = "timeout" in text.lower() or "timed out" in text.lower()
    waited = f" (or did not answer for trainer.strategy.timeout_s={timeout})" if timed_out else ""
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return TrainingError(
        f"DDP rank {rank}: another rank stopped"
        f"{waited}, so this one stops too ({first[:200]}). Look at the other nodes' logs; then "
        f"run the same command on every node with resume=auto to continue from the last "
        f"checkpoint in {OmegaConf.select(cfg, 'paths.output_dir')}/checkpoints."
    )


@contextlib.contextmanager
def distributed_run(trainer: pl.Trainer, cfg: DictConfig) -> Iterator[None]:
    """Wrap a run's fit/test: ranks get `cfg`; afterwards (even on error) rank 0 cleans up. A
    collective that fails because another rank died becomes a `TrainingError` saying so."""
    attach_run_config(trainer, cfg)
    ok = False
    try:
        yield
        ok = True
    except RuntimeError as err:
        lost = peer_failure(err, cfg, trainer.global_rank) if trainer.world_size > 1 else None
        if lost is None:
            raise
        raise lost from err
    finally:
        release(trainer, ok)
