"""Train a dialogue model from a Hydra config: data, model, trainer, loggers, callbacks."""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from dialoglab import accel
from dialoglab.errors import ConfigError
from dialoglab.experiment import resolvers  # noqa: F401  (registers ${run_id:})
from dialoglab.experiment.best_metrics import (
    EpochMetrics,
    RunMetrics,
    label_wandb_summary,
    run_metrics,
)
from dialoglab.experiment.distributed import distributed_run
from dialoglab.experiment.loggers import instantiate_callbacks, instantiate_loggers, log_run_config
from dialoglab.experiment.preemption import RequeueOnSignal
from dialoglab.experiment.pruning import sweep_callbacks
from dialoglab.experiment.resume import (
    ResumeState,
    checkpoint_io_kwargs,
    mark_finished,
    prepare_resume,
)
from dialoglab.experiment.runner import CONFIG_DIR, report_run, run_task
from dialoglab.generation import DecodingConfig

log = logging.getLogger(__name__)

SAMPLE_PROMPTS = (
    "hello!",
    "how are you?",
    "what is your name?",
    "do you like movies?",
    "where are you going?",
)


def persona_samples(
    model: Any, datamodule: Any, prompts: list[str], n_personas: int, decoding: Any = None
) -> list[tuple[str, str]]:
    """Replies as `n_personas` personas of the test split (unseen in training: split by persona),
    first to no context, then to each prompt; only for models whose `reply` takes personas."""
    find = getattr(datamodule.tokenizer, "personas", None)
    takes_personas = "personas" in inspect.signature(model.reply).parameters
    if not n_personas or find is None or not takes_personas:
        return []
    split = datamodule.splits.get("test")
    if split is None or len(split) == 0:
        split = datamodule.splits["val"]
    samples = []
    for persona in find(split, n_personas):
        contexts = [[], *([p] for p in prompts)]
        replies = model.reply(contexts, personas=[persona] * len(contexts), decoding=decoding)
        label = persona if len(persona) <= 60 else persona[:57] + "..."
        for context, reply in zip(contexts, replies, strict=True):
            # parentheses, not brackets: rich would read "[...]" as markup and drop it
            samples.append((f"({label}) {context[0] if context else '(no context)'}", reply))
    return samples


MATMUL_PRECISIONS = ("highest", "high", "medium")


def set_matmul_precision(value: str | None) -> None:
    """`torch.set_float32_matmul_precision(value)` (`float32_matmul_precision` in the config);
    null is torch's default, highest, set explicitly: the jobs of a multirun share a process."""
    value = "highest" if value is None else value
    if value not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"float32_matmul_precision={value!r}: use one of {', '.join(MATMUL_PRECISIONS)} "
            "or null (torch's default)"
        )
    torch.set_float32_matmul_precision(value)


def to_trainer_device(model: pl.LightningModule, trainer: pl.Trainer) -> None:
    """The model back on the trainer's device: Lightning's teardown leaves it on the CPU after
    fit and test, where a GPU run's sample replies would be slow (and would build the CPU GRU
    loops)."""
    model.to(trainer.strategy.root_device)


def sample_replies(
    cfg: DictConfig, model: pl.LightningModule, datamodule: Any, trainer: pl.Trainer
) -> list[tuple[str, str]]:
    """Replies to the first `sample_replies` of `sample_prompts` (rank 0 only), and as held-out
    personas where the data and model have them, decoded as chat decodes (the `default` preset
    of conf/decoding)."""
    if not cfg.get("sample_replies", 0) or not trainer.is_global_zero:
        return []
    prompts = list(cfg.sample_prompts)[: cfg.sample_replies]
    to_trainer_device(model, trainer)
    decoding = DecodingConfig.from_any("default", presets_dir=CONFIG_DIR / "decoding")
    replies = model.reply([[p] for p in prompts], decoding=decoding)
    samples = list(zip(prompts, replies, strict=True))
    n_personas = cfg.get("sample_personas", 0)
    return samples + persona_samples(model, datamodule, prompts, n_personas, decoding)


def write_summary(
    cfg: DictConfig,
    run: RunMetrics,
    best: str,
    n_params: int,
    seconds: float,
    samples: list[tuple[str, str]],
) -> None:
    """metrics.json in the run directory, the report on the console, and the run marked done.

    `metrics` are those of one checkpoint (`checkpoint`: best or last, `checkpoint_epoch`); the
    last validation's, when another epoch's, only under `last_epoch`."""
    output_dir = Path(cfg.paths.output_dir)
    summary = {
        "metrics": run.metrics,
        "checkpoint": run.checkpoint,
        "checkpoint_epoch": run.epoch,
        "last_epoch": run.last_epoch,
        "best_checkpoint": best,
        "params": n_params,
        "wall_time_s": round(seconds, 3),
        "samples": [{"prompt": p, "reply": r} for p, r in samples],
    }
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    report_run("train", output_dir, run.flat(), best, samples, run.label())
    mark_finished(output_dir)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns its metrics (floats; the last epoch's, when
    another, under `last_epoch/`)."""
    start = time.perf_counter()
    set_matmul_precision(cfg.get("float32_matmul_precision"))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    plan = prepare_resume(cfg)  # ckpt_path / resume=auto (may continue an old run in its dir)

    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    plan.restore_tokenizer(tokenizer)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")  # logs its "data: ..." summary

    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer)
    accel.for_training(model.net, cfg.get("accel"))  # speed paths, same weights (accel=none: off)
    plan.check_model(model)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    n_params = sum(p.numel() for p in model.parameters())

    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), ResumeState(), EpochMetrics()]
    callbacks += sweep_callbacks(cfg)  # a trial of an Optuna sweep: report, prune
    callbacks.append(RequeueOnSignal(Path(cfg.paths.output_dir) / "checkpoints"))  # SLURM only
    loggers = instantiate_loggers(cfg.get("logger"))
    plan.reopen_loggers(loggers)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **checkpoint_io_kwargs(cfg)
    )
    log_run_config(loggers, cfg, {"model/params": n_params, "data/vocab_size": len(tokenizer)})

    with distributed_run(trainer, cfg):  # DDP: every rank runs this resolved config
        if cfg.get("train", True):
            ckpt_path = cfg.get("ckpt_path")
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        after_fit = {k: float(v) for k, v in trainer.callback_metrics.items()}

        best = next((c.best_model_path for c in callbacks if isinstance(c, ModelCheckpoint)), "")
        if cfg.get("test", True):
            ckpt = best or None
            if ckpt is None and not cfg.get("train", True):
                ckpt = cfg.get("ckpt_path")
            trainer.test(  # verbose=False: the run report prints these metrics once, at the end
                model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False
            )

    run = run_metrics(trainer, callbacks, after_fit, best)
    samples = sample_replies(cfg, model, datamodule, trainer)
    if trainer.is_global_zero:
        label_wandb_summary(loggers, run)
        write_summary(cfg, run, best, n_params, time.perf_counter() - start, samples)
    return run.flat()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_task(train, cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name and metrics else None
