"""Row counts of oneDNN's CPU matmuls rounded up to a multiple of `ROWS` with zero rows.

gru_attn packs its training tokens (no padding), so the products over all of a batch's tokens
(the GRU input projections and their gradients, W_c and W_o) have a row count that changes from
batch to batch. oneDNN, which runs those products in bf16 on the CPU and in fp32 where
`onednn.ENABLED` (AMD CPUs), builds a kernel for every new shape (on CPUs with AMX it generates
one): in a one-off timing a step over shapes not seen before took several times as long as over
seen ones, and an epoch of the Cornell slice ran slower in bf16 than in fp32 (`--only memory`).
With the rows rounded up (the extra rows zeros, their outputs cut off) each product has a few
shapes, and their kernels are built once. fp32 products on MKL (oneDNN not enabled) stay as
they are. `DIALOGLAB_ROW_BUCKETS=0` or `ENABLED = False` turns it off.
"""

from __future__ import annotations

import os

import torch
from torch.nn import functional as F

from dialoglab.models.components import onednn

ROWS = 64
ENABLED = os.environ.get("DIALOGLAB_ROW_BUCKETS", "1") != "0"
_LOW = (torch.bfloat16, torch.float16)


def wanted(t: torch.Tensor) -> bool:
    """Whether products on `t` (its own dtype, or the CPU autocast's) get rounded rows: bf16 and
    fp16 always, fp32 where its products go to oneDNN."""
    if not ENABLED or t.device.type != "cpu":
        return False
    if t.dtype in _LOW:
        return True
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") in _LOW
    return t.dtype == torch.float32 and onednn.ENABLED


def padded(t: torch.Tensor, rows: int = ROWS) -> torch.Tensor:
    """`t` (M, ...) with zero rows appended up to a multiple of `rows`."""
    extra = -t.size(0) % rows
    if extra == 0:
        return t
    return F.pad(t, (0,) * (2 * (t.dim() - 1)) + (0, extra))
