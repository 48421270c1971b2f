"""Crash-safe training: `resume=auto`, `ckpt_path=PATH`, atomic checkpoints, RNG state, logger runs.

A run directory records what it is a run *of* (`resume_key.txt`: a hash of the resolved config
without paths, logger and resume keys) and, once it ends well, a `finished` marker. `resume=auto`
looks among the sibling run directories for the newest unfinished run with the same key, picks its
newest readable checkpoint (`last.ckpt`, else the next newest one: a corrupt file is reported and
skipped) and continues *in that directory*: checkpoints, CSV metrics (appended) and the W&B run
(same id, `resume="allow"`) carry on where they stopped. Lightning restores weights, optimizer,
scheduler, loops and callbacks; `ResumeState` adds the RNG states and the train loader
(`data/resumable.py`) the position in the epoch, so a resumed run trains on exactly the batches,
with exactly the dropout masks, of an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger, Logger

from dialoglab.data.cache import atomic_torch_save
from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.experiment.checkpoint import load_checkpoint
from dialoglab.experiment.launch import is_launch_rank_zero
from dialoglab.experiment.preemption import was_requeued
from dialoglab.experiment.run_lock import RunLock, holder, release_lock, try_lock
from dialoglab.models.dialogue_module import CHECKPOINT_KEY

log = logging.getLogger(__name__)

RESUME_KEY_FILE = "resume_key.txt"
FINISHED_FILE = "finished"
WANDB_ID_FILE = "wandb_id.txt"
RESUMED_INTO_FILE = "resumed_into.txt"
CHECKPOINT_DIR = "checkpoints"
RESUME_MODES = (None, "auto")
# Keys that do not change what is trained: where it goes, how it is logged, how it is started.
IGNORED_KEYS = ("paths", "hydra", "resume", "ckpt_path", "logger", "tags", "sample_replies")
WANDB_TARGET = "pytorch_lightning.loggers.WandbLogger"


# -- which run ---------------------------------------------------------------------------------
def resume_key(cfg: DictConfig) -> str:
    """Hash of the resolved config minus paths, logger and resume keys (run dir spelled `<run>`)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    output_dir = str(cfg.paths.output_dir)

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str) and output_dir:
            return value.replace(output_dir, "<run>")
        return value

    kept = {k: scrub(v) for k, v in container.items() if k not in IGNORED_KEYS}
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """`last.ckpt` first, then the other checkpoints of the run, newest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    others = sorted(
        (p for p in folder.glob("*.ckpt") if p.name != "last.ckpt" and p.is_file()),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    last = folder / "last.ckpt"
    return ([last] if last.is_file() else []) + others


def first_good_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads; each unreadable one is reported by name."""
    for path in checkpoint_candidates(run_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("resume: skipping %s: %s", path, err)
    return None


def is_unfinished_run_of(run_dir: Path, key: str) -> bool:
    """`run_dir` ran this config (same resume key) and did not end well."""
    key_file = run_dir / RESUME_KEY_FILE
    if not key_file.is_file() or (run_dir / FINISHED_FILE).exists():
        return False
    return key_file.read_text().strip() == key


def find_unfinished_run(
    search_dir: Path, key: str, exclude: Path, claim: bool = False
) -> tuple[Path, Path, dict[str, Any], RunLock | None] | None:
    """(run dir, checkpoint, its content, lock) of the newest unfinished run with this resume key.

    With `claim`, a run whose lock another process holds (still training, or being resumed by
    another `resume=auto`) is skipped, and the run found is returned locked."""
    runs = []
    if search_dir.is_dir():
        for run_dir in search_dir.iterdir():
            if run_dir.resolve() != exclude.resolve() and is_unfinished_run_of(run_dir, key):
                runs.append(run_dir)
    runs.sort(key=lambda d: (d / RESUME_KEY_FILE).stat().st_mtime_ns, reverse=True)
    for run_dir in runs:
        lock = try_lock(run_dir) if claim else None
        if claim and lock is None:
            log.info("resume: %s is in use by %s; looking further", run_dir, holder(run_dir))
            continue
        found = first_good_checkpoint(run_dir)
        if found is not None:
            return run_dir, *found, lock
        if lock is not None:
            lock.release()
        log.warning("resume: %s has no readable checkpoint; looking further", run_dir)
    return None


# -- the plan ------------------------------------------------------------------------------------
@dataclass
class ResumePlan:
    """What `train` does differently when it continues a run (nothing when `checkpoint` is None)."""

    checkpoint: Path | None = None
    content: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # set when continuing an earlier run in its own directory
    lock: RunLock | None = None  # held while this process trains in its run directory

    @property
    def global_step(self) -> int:
        return int(self.content.get("global_step", 0))

    def restore_tokenizer(self, tokenizer: Any) -> None:
        """Use the checkpoint's vocabulary, so that the embedding rows keep their meaning."""
        if self.checkpoint is not None:
            tokenizer.load_state_dict(self.content[CHECKPOINT_KEY]["tokenizer"])

    def check_model(self, model: Any) -> None:
        """The checkpoint must come from the model family being trained."""
        if self.checkpoint is None:
            return
        family = self.content[CHECKPOINT_KEY].get("family")
        if family != getattr(model, "family", None):
            raise CheckpointError(
                f"ckpt_path={self.checkpoint}: a {family} checkpoint cannot resume a "
                f"{model.family} model (model={model.__class__.__name__}); pick the model= "
                "the checkpoint was trained with, or start without ckpt_path"
            )

    def reopen_loggers(self, loggers: list[Logger]) -> None:
        """CSV loggers append to the interrupted run's metrics (rows after the checkpoint dropped)."""
        if self.run_dir is None:
            return
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                _reopen_csv(logger, self.global_step)


def prepare_resume(cfg: DictConfig) -> ResumePlan:
    """Decide where a run starts from; may point `paths.output_dir` and loggers at an old run.

    Only the launch's rank 0 writes the run's files and holds its lock; the other ranks of a
    multi-node run make the same decision from the same files (their configs are compared once
    the process group exists, see distributed.py)."""
    mode = cfg.get("resume")
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume must be one of null, auto; got {mode!r}")
    if mode is None and was_requeued():
        log.info("resume: a requeued SLURM job continues its own run (as resume=auto)")
        mode = "auto"
    owner = is_launch_rank_zero()
    output_dir = Path(cfg.paths.output_dir)
    key = resume_key(cfg)
    plan = ResumePlan()
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        plan = ResumePlan(checkpoint=path, content=load_checkpoint(path))
    elif mode == "auto":
        plan = _auto_plan(cfg, output_dir, key, owner)
        output_dir = plan.run_dir or output_dir
    if owner and plan.lock is None:
        plan.lock = try_lock(output_dir)
        if plan.lock is None:
            raise ConfigError(
                f"run directory {output_dir} is in use by {holder(output_dir)} (its "
                f"{output_dir / 'run.lock'} is held): give this run another hydra.run.dir, or "
                "wait for that one to end"
            )
    _prepare_wandb_id(cfg, plan, output_dir, write=owner)
    if owner:
        _write(output_dir / RESUME_KEY_FILE, key + "\n")
    return plan


def _auto_plan(cfg: DictConfig, output_dir: Path, key: str, owner: bool) -> ResumePlan:
    """`resume=auto`: this run's own directory if it holds an unfinished run of this config (a
    requeued SLURM job, a node restarted with the same hydra.run.dir), else the newest unfinished
    sibling run not in use by another process; the config then points at it."""
    found: tuple[Path, Path, dict[str, Any], RunLock | None] | None = None
    if is_unfinished_run_of(output_dir, key):
        lock = try_lock(output_dir) if owner else None
        if owner and lock is None:
            raise ConfigError(
                f"resume=auto: {output_dir} is in use by {holder(output_dir)}; wait for it to end"
            )
        checkpoint = first_good_checkpoint(output_dir)
        found = (output_dir, *checkpoint, lock) if checkpoint is not None else None
    if found is None:
        found = find_unfinished_run(output_dir.parent, key, exclude=output_dir, claim=owner)
    if found is None:
        log.info("resume=auto: no unfinished run of this config; starting a new run")
        return ResumePlan()
    run_dir, path, content, lock = found
    log.info("resume=auto: continuing %s from %s", run_dir, path)
    if owner and run_dir != output_dir:
        _write(output_dir / RESUMED_INTO_FILE, f"{run_dir}\n")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.ckpt_path = str(path)
    return ResumePlan(checkpoint=path, content=content, run_dir=run_dir, lock=lock)


def checkpoint_io_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Atomic checkpoint writes, unless the trainer config brings its own plugins."""
    if cfg.trainer.get("plugins"):
        return {}
    return {"plugins": [AtomicCheckpointIO()]}


def mark_finished(output_dir: str | Path) -> None:
    """Tell later `resume=auto` runs that this one needs no resuming; free its directory."""
    _write(Path(output_dir) / FINISHED_FILE, "")
    release_lock(Path(output_dir))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prepare_wandb_id(cfg: DictConfig, plan: ResumePlan, output_dir: Path, write: bool) -> None:
    """Give W&B a run id kept in the run dir, so that a resumed run logs to the same W&B run."""
    for _, node in (cfg.get("logger") or {}).items():
        if not (isinstance(node, DictConfig) and node.get("_target_") == WANDB_TARGET):
            continue
        id_file = output_dir / WANDB_ID_FILE
        with open_dict(node):
            if plan.run_dir is not None and id_file.is_file():
                node.id = id_file.read_text().strip()
                node.resume = "allow"
            elif not node.get("id"):
                node.id = secrets.token_hex(4)
        if write:
            _write(id_file, f"{node.id}\n")


def _reopen_csv(logger: CSVLogger, global_step: int) -> None:
    metrics_file = Path(logger.log_dir) / "metrics.csv"
    if not metrics_file.is_file():
        return
    with open(metrics_file, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if _step(r) < global_step]
    writer = logger.experiment  # Lightning's writer deletes the old file here
    writer.metrics_keys = sorted(header)
    tmp = metrics_file.with_name(".metrics.csv.tmp")
    with open(tmp, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=writer.metrics_keys)
        out.writeheader()
        out.writerows(rows)
    os.replace(tmp, metrics_file)


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


# -- what Lightning does not save ----------------------------------------------------------------
def collect_rng_states() -> dict[str, Any]:
    """torch, CUDA, Python and NumPy RNG states as plain types (loads with weights_only=True)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return states
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states["numpy"] = [str(name), keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy as np

        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


class ResumeState(Callback):
    """Saves the RNG states in every checkpoint and restores them right before the first batch
    of a resumed run (after the sanity check and loader set-up, as an uninterrupted run would).
    Under DDP each rank's states are kept (they differ: dropout draws as many numbers as its
    batches have tokens), and each rank gets its own back."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return {"rng": states}
        per_rank: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, states)  # every rank saves a checkpoint together
        return {"rng": states, "rng_per_rank": per_rank}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")
        per_rank = state_dict.get("rng_per_rank")
        if per_rank and dist.is_available() and dist.is_initialized():
            if len(per_rank) == dist.get_world_size():
                self._pending = per_rank[dist.get_rank()]
            else:
                log.warning(
                    "resume: the checkpoint has RNG states of %d ranks, this run has %d; "
                    "dropout masks will differ from an uninterrupted run's",
                    len(per_rank),
                    dist.get_world_size(),
                )

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints go to a temp file in the same folder, fsync'ed, then renamed over the old
    one (fsspec's transaction writes to /tmp and *copies* across filesystems: not atomic). A file
    that cannot be loaded raises CheckpointError naming it."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> Any:
        try:
            return super().load_checkpoint(
                path, map_location=map_location, weights_only=weights_only
            )
        except FileNotFoundError as err:
            raise CheckpointError(f"ckpt_path={path}: no such file") from err
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise CheckpointError(
                f"ckpt_path={path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                f"{first}). It may be truncated; resume=auto falls back to the run's previous "
                "checkpoint, or pass another one with ckpt_path="
            ) from err
