"""Row counts of bf16 CPU matmuls rounded up to a multiple of `ROWS` with zero rows.

gru_attn trains on packed tokens (no padding), so the products over a batch's tokens (the GRU
input projections, their gradients and the output layer) have a row count that changes from
batch to batch. oneDNN, which runs bf16 products on the CPU, builds a kernel for every new shape
(on CPUs with AMX it generates one), so a short bf16 run spends much of its time building
kernels: steps over unseen shapes took twice as long as over seen ones. With the rows rounded
up (the extra rows zeros, their results cut off or ignored) each product has a few shapes.
fp32 products (MKL) do not build kernels per shape and are left as they are.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

ROWS = 16
_LOW = (torch.bfloat16, torch.float16)


def wanted(t: torch.Tensor) -> bool:
    """Whether products on CPU tensor `t` run in bf16/fp16 (its own dtype or autocast's)."""
    if t.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _LOW:
        return True
    return t.dtype in _LOW


def for_products_in(t: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
    """`t` padded (`padded`) where its products run in `compute_dtype` bf16/fp16, else `t`."""
    return padded(t) if compute_dtype in _LOW else t


def padded(t: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """`t` (M, ...) with rows of `value` appended up to a multiple of `ROWS`."""
    extra = -t.size(0) % ROWS
    if extra == 0:
        return t
    return F.pad(t, (0,) * (2 * (t.dim() - 1)) + (0, extra), value=value)
