"""OmegaConf resolvers our configs use; registered on import (entry points import this first)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from dialoglab.experiment.entry_help import config_groups
from dialoglab.experiment.launch import shared_run_name


def _run_id() -> str:
    """Short random id so two runs started in the same second get different directories."""
    return uuid.uuid4().hex[:6]


def run_name() -> str:
    """A run directory's name: the launch's shared name on a cluster (every node of a SLURM job
    step or torchrun rendezvous gets the same directory, see launch.py), else
    '<date>_<time>_<random id>'."""
    return shared_run_name() or f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{_run_id()}"


def _multirun_hydra():  # -> the job's `hydra` node inside a Hydra multirun, else None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return hydra_cfg
    return None


def sweep_name() -> str:
    """The sweep a run belongs to ('' outside one): the Optuna study name, else the sweep
    directory's name in a Hydra multirun; the sweep id under a `wandb agent`."""
    hydra_cfg = _multirun_hydra()
    if hydra_cfg is not None:
        study = OmegaConf.select(hydra_cfg, "sweeper.study_name", default=None)
        return str(study) if study else Path(str(hydra_cfg.sweep.dir)).name
    return os.environ.get("WANDB_SWEEP_ID", "")


def job_suffix() -> str:
    """'-job<N>' for job N of a Hydra multirun (its sweep subdirectory), '' otherwise."""
    hydra_cfg = _multirun_hydra()
    num = OmegaConf.select(hydra_cfg, "job.num", default=None) if hydra_cfg is not None else None
    return f"-job{num}" if num is not None else ""


def gpus_per_node(accelerator: str, devices: object) -> object:
    """What a SLURM job asks per node for a trainer: its devices on GPUs, nothing on CPUs."""
    return None if str(accelerator) == "cpu" else devices


RESOLVERS = {  # name -> (function, whether its first value is kept for the run)
    "cwd": (os.getcwd, True),  # the directory the command was started from
    "run_id": (_run_id, True),
    "run_name": (run_name, True),
    "gpus_per_node": (gpus_per_node, False),
    "sweep_name": (sweep_name, False),
    "job_suffix": (job_suffix, False),
    "config_groups": (config_groups, False),  # --help: the groups an entry point accepts
}
for _name, (_resolver, _cached) in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver, use_cache=_cached)
