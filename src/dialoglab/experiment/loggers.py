"""Build loggers and callbacks from config; W&B falls back to offline mode without credentials."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


def has_wandb_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc (as `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _prepare_wandb(cfg: DictConfig) -> DictConfig:
    """Decide online/offline before wandb starts: with no key it would raise or wait on network."""
    cfg = cfg.copy()
    with open_dict(cfg):
        if cfg.get("offline") is None:
            env_mode = os.environ.get("WANDB_MODE")
            cfg.offline = env_mode in ("offline", "dryrun") or (
                env_mode is None and not has_wandb_credentials()
            )
            if cfg.offline:
                log.warning(
                    "W&B: no credentials found (WANDB_API_KEY or `wandb login`), so the run is "
                    "logged offline under %s/wandb. Upload it later with: wandb sync %s/wandb/offline-run-*",
                    cfg.get("save_dir", "."),
                    cfg.get("save_dir", "."),
                )
    return cfg


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Every `_target_` node under `logger:` becomes a Lightning logger."""
    loggers: list[Logger] = []
    for _, node in (cfg or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            if node._target_ == WANDB_TARGET:
                node = _prepare_wandb(node)
            loggers.append(hydra.utils.instantiate(node))
    _ensure_csv_in_sweeps(loggers)
    return loggers


def _ensure_csv_in_sweeps(loggers: list[Logger]) -> None:
    """Every run of a sweep also logs CSV (what `python -m dialoglab.report` reads offline)."""
    from hydra.core.hydra_config import HydraConfig

    from dialoglab.experiment.runner import is_multirun

    in_sweep = is_multirun() or bool(os.environ.get("WANDB_SWEEP_ID"))
    if not in_sweep or not HydraConfig.initialized():
        return
    if any(isinstance(lg, CSVLogger) for lg in loggers):
        return
    output_dir = HydraConfig.get().runtime.output_dir
    loggers.append(CSVLogger(save_dir=output_dir, name="csv", version=""))
    log.info("sweep run: also logging CSV to %s/csv", output_dir)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every `_target_` node under `callbacks:` becomes a Lightning callback."""
    return [
        hydra.utils.instantiate(node)
        for _, node in (cfg or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def log_run_config(loggers: list[Logger], cfg: DictConfig, extra: dict[str, Any]) -> None:
    """Send the resolved config (plus e.g. parameter counts) to every logger as hyperparameters."""
    params = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(params, dict)
    params.update(extra)
    for logger in loggers:
        logger.log_hyperparams(params)
