"""Evaluate a checkpoint: rebuild model, tokenizer and data settings from the checkpoint alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from dialoglab import accel
from dialoglab.errors import ConfigError
from dialoglab.experiment import resolvers  # noqa: F401  (registers ${run_id:})
from dialoglab.experiment.checkpoint import restore_model
from dialoglab.experiment.runner import CONFIG_DIR, report_run, resolve_ckpt_path, run_task
from dialoglab.generation import DecodingConfig


def data_overrides(cfg: DictConfig) -> DictConfig:
    """The `data.*` keys of eval's config that are set (null keeps the checkpoint's value)."""
    given = OmegaConf.to_container(cfg.get("data") or OmegaConf.create({}), resolve=True)
    return OmegaConf.create({k: v for k, v in given.items() if v is not None})  # type: ignore[union-attr]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test metrics of `cfg.ckpt_path` on its own data (or `cfg.data` overrides), printed and saved."""
    stage = cfg.get("split", "test")
    if stage not in ("test", "val"):
        raise ConfigError(f"split={stage!r}: eval.py scores the test or val split")
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.root_dir)  # a path, best or last
    restored = restore_model(ckpt_path)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    # Weights are converted where they will run (int8 is CPU-only: a GPU trainer gets a clear
    # `quantize` error, and `auto` stays fp32 there).
    run_cfg, model = restored.cfg, restored.model.to(trainer.strategy.root_device)
    model = accel.for_inference(model, cfg.get("quantize", "none"), cfg.get("accel"))
    model.decoding = DecodingConfig.from_any(cfg.get("decoding"))  # BLEU/distinct under it
    data_cfg = OmegaConf.merge(run_cfg.data, data_overrides(cfg))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(data_cfg, tokenizer=model.tokenizer)
    datamodule.prepare_data()
    datamodule.setup("test")

    n_examples = len(datamodule.splits[stage])
    run = trainer.validate if stage == "val" else trainer.test
    run(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    output_dir = Path(cfg.paths.output_dir)
    result = {
        "ckpt_path": str(ckpt_path),
        "split": stage,
        "data": {"path": datamodule.path, "split": list(datamodule.split), "examples": n_examples},
        "decoding": model.decoding.to_dict(),
        "quantize": model.inference_weights,
        "metrics": metrics,
        "samples": [
            dict(zip(("context", "reference", "reply"), s, strict=True)) for s in model.samples
        ],
    }
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    report_run("eval", output_dir, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.setdefault("data", {})
    run_task(evaluate, cfg)
