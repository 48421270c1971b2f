"""Export a GPT-2 checkpoint as a Hugging Face `save_pretrained` directory (model + tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dialoglab.errors import CheckpointError
from dialoglab.experiment import resolvers  # noqa: F401  (registers ${run_id:})
from dialoglab.experiment.checkpoint import restore_model
from dialoglab.experiment.runner import CONFIG_DIR, console, run_task


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write `cfg.out` from `cfg.ckpt_path`; returns {"out": path, "family": ...}."""
    restored = restore_model(cfg.ckpt_path)
    model = restored.model
    write = getattr(model, "export_pretrained", None)
    if write is None:
        raise CheckpointError(
            f"ckpt_path={cfg.ckpt_path}: a {model.family} checkpoint; only GPT-2 checkpoints "
            "(model=gpt2 or gpt2_scratch) export to a Hugging Face directory"
        )
    out = Path(str(cfg.out)).expanduser()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"out={out} exists and is not a directory")
    write(out)
    console.print(f"exported [bold]{cfg.ckpt_path}[/] to [bold]{out}[/]")
    console.print(
        "load it with: GPT2LMHeadModel.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR)"
    )
    return {"out": str(out), "family": model.family}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(export, cfg)
