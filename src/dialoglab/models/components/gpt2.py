"""GPT-2 language models (Hugging Face `GPT2LMHeadModel`): pretrained, from a saved config, or new.

Plain construction only: nothing here knows Lightning, Hydra or the data pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN

from dialoglab.errors import ConfigError
from dialoglab.hf_hub import load_pretrained


@dataclass(frozen=True)
class SpecialIds:
    """The tokenizer's ids the model must agree with (transformers warns when they are unset)."""

    vocab_size: int
    bos: int
    eos: int
    pad: int


def _set_special_ids(model: GPT2LMHeadModel, ids: SpecialIds) -> GPT2LMHeadModel:
    for holder in (model.config, model.generation_config):
        holder.bos_token_id = ids.bos
        holder.eos_token_id = ids.eos
        holder.pad_token_id = ids.pad
    return model


# GPT-2's GELU is the tanh approximation. Hugging Face's GPT-2 default, "gelu_new", computes it
# as eight elementwise ATen ops forward (more backward); "gelu_pytorch_tanh" is the same formula
# as one fused op (F.gelu(approximate="tanh")), equal to float rounding.
FAST_ACTIVATION = "gelu_pytorch_tanh"


def check_activation(name: str) -> str:
    if name not in ACT2FN:
        raise ConfigError(
            f"model.activation={name!r} is not a transformers activation; use one of: "
            f"{', '.join(sorted(ACT2FN))}"
        )
    return name


def set_activation(model: GPT2LMHeadModel, name: str) -> GPT2LMHeadModel:
    """Use the activation `name` (a transformers ACT2FN key) in every MLP, recorded in the config
    so that `save_pretrained` files and checkpoints rebuild the same network."""
    check_activation(name)
    for block in model.transformer.h:
        block.mlp.act = ACT2FN[name]
    model.config.activation_function = name
    return model


def gpt2_from_scratch(
    ids: SpecialIds,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 256,
    n_positions: int = 256,
    dropout: float = 0.1,
    activation: str = FAST_ACTIVATION,
) -> GPT2LMHeadModel:
    """Randomly initialised GPT-2 whose vocabulary and bos/eos/pad ids are the tokenizer's."""
    if n_embd % n_head:
        raise ConfigError(f"model.n_embd={n_embd} must be a multiple of model.n_head={n_head}")
    check_activation(activation)
    config = GPT2Config(
        vocab_size=ids.vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        activation_function=activation,
        bos_token_id=ids.bos,
        eos_token_id=ids.eos,
        pad_token_id=ids.pad,
    )
    return _set_special_ids(GPT2LMHeadModel(config), ids)


def gpt2_pretrained(
    name_or_path: str, ids: SpecialIds, activation: str | None = None
) -> GPT2LMHeadModel:
    """Pretrained weights from a hub name or a `save_pretrained` directory, resized to the
    tokenizer (which added dialogue special tokens); offline, a hub name fails within seconds.
    `activation` replaces the MLP activation the weights were saved with (None keeps it)."""
    model = load_pretrained(GPT2LMHeadModel.from_pretrained, name_or_path, key="model.pretrained")
    model.train()  # from_pretrained returns eval mode; Lightning keeps submodule modes as found
    if not isinstance(model, GPT2LMHeadModel):  # pragma: no cover - from_pretrained of the class
        raise ConfigError(f"model.pretrained={name_or_path!r} is not a GPT-2 model")
    if model.config.vocab_size != ids.vocab_size:
        model.resize_token_embeddings(ids.vocab_size)
    if activation is not None and activation != model.config.activation_function:
        set_activation(model, activation)
    return _set_special_ids(model, ids)


def gpt2_from_config(config: Mapping[str, Any], ids: SpecialIds) -> GPT2LMHeadModel:
    """The architecture a checkpoint recorded (weights are loaded afterwards from the checkpoint)."""
    values = {
        k: v for k, v in dict(config).items() if k not in ("architectures", "transformers_version")
    }
    model = GPT2LMHeadModel(GPT2Config(**values))
    if model.config.vocab_size != ids.vocab_size:
        raise ConfigError(
            f"the checkpoint's GPT-2 has {model.config.vocab_size} token embeddings but its "
            f"tokenizer {ids.vocab_size} tokens"
        )
    return _set_special_ids(model, ids)


def enable_activation_checkpointing(model: GPT2LMHeadModel) -> None:
    """Recompute each block's activations in backward (transformers 5 name, or the 4.x one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a cache is useless in training (and warned about)


def is_activation_checkpointing(model: GPT2LMHeadModel) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def architecture(model: GPT2LMHeadModel) -> dict[str, Any]:
    """The model's config as plain JSON types (fits a `weights_only` checkpoint)."""
    import json

    return json.loads(model.config.to_json_string(use_diff=False))
