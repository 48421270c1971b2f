"""Build loggers and callbacks from config; W&B falls back to offline mode without credentials."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)

WANDB_TARGET = "pytorch_lightning.loggers.WandbLogger"


def has_wandb_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc (as `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _prepare_wandb(cfg: DictConfig) -> DictConfig:
    """Decide online/offline before wandb starts (with no key it would raise or wait on network),
    and how much W&B prints: `settings.quiet` (conf/logger/wandb.yaml) drops its run summary;
    offline, W&B stays silent and one line of ours says where the run is and how to upload it."""
    cfg = cfg.copy()
    with open_dict(cfg):
        reason = ""
        if cfg.get("offline") is None:
            env_mode = os.environ.get("WANDB_MODE")
            cfg.offline = env_mode in ("offline", "dryrun") or (
                env_mode is None and not has_wandb_credentials()
            )
            if cfg.offline and env_mode is None:
                reason = "no credentials found (WANDB_API_KEY or `wandb login`), so "
        if cfg.offline:
            save_dir = cfg.get("save_dir", ".")
            log.log(
                logging.WARNING if reason else logging.INFO,
                "W&B: %sthe run is logged offline under %s/wandb; upload it later with: "
                "wandb sync %s/wandb/offline-run-*",
                reason,
                save_dir,
                save_dir,
            )
            cfg.settings = {**(cfg.get("settings") or {}), "silent": True}
    return cfg


def _drop_anonymous(logger: Logger) -> None:
    """Lightning's WandbLogger passes `anonymous=None` to wandb.init, which W&B (>= 0.23) answers
    with a warning that the setting has no effect (wandb/wandb#10909); leave it out."""
    init_args = getattr(logger, "_wandb_init", None)
    if isinstance(init_args, dict) and init_args.get("anonymous") is None:
        init_args.pop("anonymous", None)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Every `_target_` node under `logger:` becomes a Lightning logger (given plain Python
    values: W&B reads `settings` only from a dict)."""
    loggers: list[Logger] = []
    for _, node in (cfg or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            is_wandb = node._target_ == WANDB_TARGET
            if is_wandb:
                node = _prepare_wandb(node)
            logger = hydra.utils.instantiate(node, _convert_="all")
            if is_wandb:
                _drop_anonymous(logger)
            loggers.append(logger)
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
