"""Load a dialoglab checkpoint and rebuild tokenizer and model from it alone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from dialoglab.errors import CheckpointError
from dialoglab.models.dialogue_module import CHECKPOINT_KEY, DialogueModule


@dataclass
class Restored:
    """A model rebuilt from a checkpoint, with the run config that trained it."""

    cfg: DictConfig
    model: DialogueModule
    checkpoint: dict[str, Any]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ckpt_path={path}: no such file. Training writes checkpoints to "
            "outputs/train/runs/<run>/checkpoints/ (best: epoch_*.ckpt, latest: last.ckpt)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"ckpt_path={path}: not a readable PyTorch checkpoint ({load_failure(err)}). It may be "
            "truncated or another kind of file; use last.ckpt or another epoch_*.ckpt of the run."
        ) from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(
            f"ckpt_path={path}: a PyTorch file, but not a dialoglab checkpoint (it has no "
            f"'{CHECKPOINT_KEY}' entry holding config and tokenizer)."
        )
    return checkpoint


def load_failure(err: BaseException) -> str:
    """Why torch.load failed, in one short clause. torch's advice to load the file again with
    weights_only=False is left out: that would run whatever code an untrusted file holds."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch bolds part of its message
    if "WeightsUnpickler error:" in text:  # the reason, after torch's advice
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if "weights_only" in reason:
        reason = "not loadable as plain tensors and values"
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def weight_mismatch(expected: dict[str, Any], found: dict[str, Any], limit: int = 3) -> str:
    """What differs between a model's state dict and a checkpoint's (shapes, missing, extra)."""
    parts = [
        f"{name} is {list(value.shape)} in the checkpoint but {list(expected[name].shape)} here"
        for name, value in found.items()
        if name in expected and getattr(value, "shape", None) != expected[name].shape
    ][:limit]
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if missing:
        parts.append(f"missing {missing[:limit]}")
    if extra:
        parts.append(f"unexpected {extra[:limit]}")
    return "; ".join(parts)


NET_KEYS = (
    "hidden_size",
    "encoder_n_layers",
    "decoder_n_layers",
    "dropout",
    "attention",
    "rnn_type",
)
RETIRED_KEYS = ("fused_rnn", "fast_dropout", "search")  # speed switches that moved to `accel`


def upgrade_model_config(model_cfg: DictConfig) -> DictConfig:
    """A checkpoint's `model` config in today's shape: gru_attn's network settings under
    `net` (checkpoints written before the network was injected held them at the top) and the
    retired speed switches dropped. Weights and state_dict keys need no change."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    for key in RETIRED_KEYS:
        cfg.pop(key, None)
    if str(cfg.get("_target_", "")).endswith("Seq2SeqModule") and "net" not in cfg:
        net = {key: cfg.pop(key) for key in NET_KEYS if key in cfg}
        target = "dialoglab.models.components.gru_attn.GRUAttnSeq2Seq"
        cfg["net"] = {"_target_": target, "_partial_": True, **net}
    return OmegaConf.create(cfg)


def restore_model(path: str | Path) -> Restored:
    """Rebuild tokenizer and model exactly as trained, on CPU, from the checkpoint alone."""
    checkpoint = load_checkpoint(path)
    payload = checkpoint[CHECKPOINT_KEY]
    cfg = OmegaConf.create(payload["config"])
    cfg.model = upgrade_model_config(cfg.model)
    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    tokenizer.load_state_dict(payload["tokenizer"])
    init_kwargs = payload.get("init_kwargs") or {}  # e.g. the GPT-2 architecture it recorded
    model: DialogueModule = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, **init_kwargs)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        detail = weight_mismatch(model.state_dict(), checkpoint["state_dict"]) or str(err)
        raise CheckpointError(
            f"ckpt_path={path}: its weights do not fit the model that its config and its "
            f"vocabulary ({len(tokenizer)} tokens) describe: {detail}. Tokenizer and weights of "
            "this file come from different runs; use a checkpoint written by train.py"
        ) from err
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.eval()
    return Restored(cfg=cfg, model=model, checkpoint=checkpoint)
