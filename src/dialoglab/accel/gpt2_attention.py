"""GPT-2 attention on CUDA kept off cuDNN's SDPA backend (a Hugging Face attention function).

torch tries cuDNN first for a masked SDPA call on Hopper, and cuDNN builds an execution plan
for every new shape (hundreds of ms each), while dialogue batches bring a new padded length
nearly every step and generation a new key length every token. Flash or memory-efficient
attention serve the same calls at any shape. `use_sdpa_without_cudnn(net)` registers Hugging
Face's own SDPA attention inside `sdpa_kernel(<every backend but cuDNN>)` as the model's
attention implementation: the same maths and weights; on other devices it is plain SDPA.
The implementation name is a runtime setting, not saved by `save_pretrained` or checkpoints.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

NAME = "dialoglab_sdpa_without_cudnn"
_NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Hugging Face's SDPA attention; on CUDA with cuDNN's backend excluded."""
    on_cuda = query.device.type == "cuda"
    with sdpa_kernel(_NOT_CUDNN) if on_cuda else contextlib.nullcontext():
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def use_sdpa_without_cudnn(net: nn.Module) -> nn.Module:
    """Switch a Hugging Face model on SDPA attention to `attention_forward`, in place."""
    config = getattr(net, "config", None)
    if config is not None and config._attn_implementation in (None, "sdpa"):
        config._attn_implementation = NAME
    return net


AttentionInterface.register(NAME, attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)
