"""Dropout with a cheaper mask on the CPU: 16 bits per element from a hash, no generator calls.

`F.dropout` on the CPU fills its mask with `bernoulli_`, one random draw per element, and on 2
cores that draw is most of its cost. Here each element gets 16 bits, and it is dropped when
they fall below round(p * 65536): the drop rate is p to within 1/131072 (0.1 becomes
0.100006), and kept values are scaled by 1 / (1 - that rate) so the expectation is unchanged.

Where the fused GRU's C++ extension loads (`fused_gru.compiled_loops`), the bits are a hash of
(seed, element index) (`hashed_dropout.cpp`): one seed drawn from torch's default generator
per call, then forward and backward each recompute the mask while they scale, one pass each
way and no mask kept between them. The gru_attn step's three dropouts (embeddings, and between
the encoder's and the decoder's layers) then take ~0.5 instead of ~2.5 ms in fp32 and ~1.2
instead of ~3.5 ms in bf16, forward + backward on 2 cores (a one-off timing; `python -m
dialoglab.bench --only utilisation` times one of them, the dropout rows). Without the
extension one 64-bit `torch.randint` draw gives four elements 16 bits each
(`DIALOGLAB_HASHED_DROPOUT=0`, or `hashed_masks(False)`, keeps that path too). Other devices
use `F.dropout`.
Both paths take their randomness from the default generator, so `torch.manual_seed` /
`seed_everything` make the masks reproducible (the two paths draw different masks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

_LEVELS = 1 << 16  # 16-bit buckets per element
# The hashed masks of hashed_dropout.cpp where the extension loads (DIALOGLAB_HASHED_DROPOUT=0:
# torch.randint's).
HASHED = os.environ.get("DIALOGLAB_HASHED_DROPOUT", "1") != "0"
_MAX_HASHED = 1 << 32  # the hash takes a 32-bit element index: larger tensors take randint's


@contextlib.contextmanager
def hashed_masks(enabled: bool) -> Iterator[None]:
    """Hashed masks off inside the block with enabled=False (on where `HASHED` already allows
    them otherwise); the setting back afterwards."""
    global HASHED
    previous = HASHED
    HASHED = previous and enabled
    try:
        yield
    finally:
        HASHED = previous


def _hashed_applies(x: torch.Tensor) -> bool:
    """Whether hashed_dropout.cpp takes x: fp32 or bf16, the extension built and not turned off,
    and not inside torch.compile's tracing (which the randint path's ATen ops go through)."""
    if not HASHED or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if torch.compiler.is_compiling() or x.numel() >= _MAX_HASHED:
        return False
    from dialoglab.models.components import fused_gru  # (it imports this module)

    return fused_gru.compiled_loops()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the mask drawn as above on the CPU."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if x.device.type != "cpu" or p == 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training=True)
    threshold = round(p * _LEVELS)  # drop where the bits, read as 0..65535, are below this
    scale = _LEVELS / (_LEVELS - threshold)
    if _hashed_applies(x):
        seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64))
        return _HashedDropout.apply(x, seed, threshold, scale)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform over -32768..32767
    keep = bits >= threshold - _LEVELS // 2
    if x.dtype in (torch.float32, torch.float64):
        return _ScaledMask.apply(x, keep.to(x.dtype).mul_(scale))
    # A bf16 / fp16 mask would round the scale (a biased expectation): scale the product instead.
    return x.mul(keep).mul_(scale)


class _ScaledMask(torch.autograd.Function):
    """x * m forward and g * m backward, m the mask with the scale in it: one pass each way
    (`x.mul(keep).mul_(scale)` takes two, and autograd two more). Keep times scale is exact, so
    the results are bit for bit those of the two-pass form."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class _HashedDropout(torch.autograd.Function):
    """x * scale where the hash of (seed, index) keeps an element, else 0; the gradient likewise
    (the same mask, recomputed)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, seed: int, threshold: int, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.mask = (seed, threshold, scale)
        return torch.ops.dialoglab_gru.hashed_dropout(x, seed, threshold, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        return torch.ops.dialoglab_gru.hashed_dropout(grad, *ctx.mask), None, None, None


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout` (no parameters or state: checkpoints are unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
