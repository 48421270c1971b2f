"""Train a dialogue model from a Hydra config: data, model, trainer, loggers, callbacks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dialoglab.experiment import resolvers  # noqa: F401  (registers ${run_id:})
from dialoglab.experiment.loggers import instantiate_callbacks, instantiate_loggers, log_run_config
from dialoglab.experiment.runner import CONFIG_DIR, report_run, run_task

log = logging.getLogger(__name__)

SAMPLE_PROMPTS = (
    "hello!",
    "how are you?",
    "what is your name?",
    "do you like movies?",
    "where are you going?",
)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns the final metrics (floats)."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    log.info("data: %s", datamodule.describe())

    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    n_params = sum(p.numel() for p in model.parameters())

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    log_run_config(loggers, cfg, {"model/params": n_params, "data/vocab_size": len(tokenizer)})

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = next((c.best_model_path for c in callbacks if isinstance(c, ModelCheckpoint)), "")
    if cfg.get("test", True):
        ckpt = best or None
        if ckpt is None and not cfg.get("train", True):
            ckpt = cfg.get("ckpt_path")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    samples = []
    if cfg.get("sample_replies", 0) and trainer.is_global_zero:
        prompts = list(cfg.sample_prompts)[: cfg.sample_replies]
        samples = list(zip(prompts, model.reply([[p] for p in prompts]), strict=True))

    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        summary = {
            "metrics": metrics,
            "best_checkpoint": best,
            "params": n_params,
            "samples": [{"prompt": p, "reply": r} for p, r in samples],
        }
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        report_run("train", output_dir, metrics, best, samples)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_task(train, cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name and metrics else None
