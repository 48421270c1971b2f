"""GPT-2's dropout with our cheaper CPU mask (`models/components/dropout.py`).

A Hugging Face GPT-2 drops in two ways: `nn.Dropout` modules (after the embeddings, after each
block's attention and MLP), and inside attention on the attention weights (`attn_pdrop`), where
PyTorch's SDPA on the CPU leaves its fused kernel for the math one and draws its mask with
`bernoulli_`. `use_fast_dropout(model)` swaps the modules for `Dropout` and routes attention
through `attention_forward`: SDPA itself (the same function Hugging Face's `sdpa` runs) whenever
no dropout applies (evaluation, generation, `attn_pdrop=0`, other devices), else the math
kernel's products written out with our dropout on the weights.

The attention implementation is registered under `ATTENTION` with SDPA's mask builder. It is a
runtime setting of the config (`config._attn_implementation`), which `save_pretrained` and
checkpoints do not record, so exported models load anywhere as plain GPT-2s. Same expectation,
a different (cheaper) random mask: dropout is the only thing that changes.

On CUDA both `ATTENTION` and `PLAIN_ATTENTION` (Hugging Face's SDPA with PyTorch's dropout, for
`fast_dropout=false`) keep SDPA off cuDNN's backend: torch 2.11 tries it first for a masked call
on Hopper, and cuDNN builds an execution plan for every new shape (a few hundred ms each way),
while dialogue batches have a new padded length nearly every step, and generation a new key
length every token. Flash or memory-efficient attention serve the same calls at any shape.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from dialoglab.models.components.dropout import Dropout
from dialoglab.models.components.dropout import dropout as fast_dropout

ATTENTION = "dialoglab_sdpa"
PLAIN_ATTENTION = "dialoglab_sdpa_plain"
_NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa_backends(device_type: str) -> contextlib.AbstractContextManager:
    """SDPA's backends for variable shapes: on CUDA every one but cuDNN's (see the module doc);
    elsewhere torch's choice."""
    return sdpa_kernel(_NOT_CUDNN) if device_type == "cuda" else contextlib.nullcontext()


def attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Hugging Face's attention-function interface: (B, H, T, D) query, key and value in; the
    output (B, T, H, D) and no weights out."""
    if dropout == 0.0 or query.device.type != "cpu":
        return plain_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.size(-1))
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # (B, H, T, S)
    T, S = scores.shape[-2:]
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    allowed = attention_mask
    if allowed is None and is_causal and T > 1:  # SDPA's mask builder left it to is_causal
        allowed = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(S - T)
    if allowed is not None and allowed.dtype == torch.bool:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    elif allowed is not None:  # an additive float mask
        scores = scores + allowed
    weights = fast_dropout(scores.softmax(dim=-1), dropout)
    out = torch.matmul(weights.to(value.dtype), value)  # (B, H, T, D)
    return out.transpose(1, 2).contiguous(), None


def plain_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Hugging Face's SDPA attention, kept off cuDNN's backend on CUDA."""
    with sdpa_backends(query.device.type):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def use_plain_attention(model: nn.Module) -> nn.Module:
    """`PLAIN_ATTENTION` for a model on Hugging Face's SDPA (others are left as they are)."""
    if model.config._attn_implementation in (None, "sdpa"):
        model.config._attn_implementation = PLAIN_ATTENTION
    return model


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Our dropout everywhere in a Hugging Face GPT-2 (in place; parameters untouched)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    model.config._attn_implementation = ATTENTION
    return model


AttentionInterface.register(ATTENTION, attention_forward)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
AttentionInterface.register(PLAIN_ATTENTION, plain_attention_forward)
AttentionMaskInterface.register(PLAIN_ATTENTION, sdpa_mask)
