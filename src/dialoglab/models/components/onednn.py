"""fp32 matrix multiplies through oneDNN on the CPU: torch.mm's products, faster on AMD CPUs.

On the CPU, `torch.mm`, `addmm` and `F.linear` in fp32 call MKL's sgemm. oneDNN's matmul (what
torch already uses for bf16) runs the gru_attn step's shapes faster on AMD EPYC cores, and
slower than MKL on Intel Xeon cores (AVX-512): `python -m dialoglab.bench --only utilisation`
times both (rows "fp32 matmul peak, torch.mm" and "..., oneDNN", and the step through the
library not chosen). So oneDNN is on by default on AMD CPUs only (`ENABLED`);
`DIALOGLAB_ONEDNN=1` turns it on anywhere the build has it (`AVAILABLE`), `=0` off. torch
reaches oneDNN's fp32 matmul through `torch.ops.mkldnn._linear_pointwise` (x @ w^T + b, no autograd of its own), so it is called only
inside autograd Functions: `GRULayerFunction` and `linear` below, each with its own backward.

oneDNN is used when the left operand is row-major. Weight gradients dY^T X (a transposed left
operand) have their own oneDNN primitive, `weight_grad`, which the fused GRU's layers and
`LinearFunction` use for every shape (on the AMD EPYC cores of 2026-12-02, AVX-512 at full
width, it ran the step's weight gradients about twice as fast as MKL's transposed product, the
wide ones included, where MKL had been as fast on earlier AMD cores). bf16 products with a
bias take the same op on any CPU with oneDNN's bf16 (`addmm`, `BF16_PRODUCTS`). Everything
else (no oneDNN in the build, other dtypes or devices, oneDNN not enabled) goes to torch's own
ops. Results equal torch.mm's to float rounding (tests/unit/test_onednn.py).
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn


def _op_available() -> bool:
    """True when this torch build has oneDNN and its fp32 linear op, and it is not turned off."""
    if os.environ.get("DIALOGLAB_ONEDNN") == "0":
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor id ("AuthenticAMD", "GenuineIntel", ...), or "" where it is not known."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def faster_here(vendor: str | None = None) -> bool:
    """Whether oneDNN is the default here: where it measured faster than MKL (AMD CPUs), or
    where DIALOGLAB_ONEDNN=1 asks for it."""
    if os.environ.get("DIALOGLAB_ONEDNN") == "1":
        return True
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


AVAILABLE = _op_available()
ENABLED = AVAILABLE and faster_here()


@functools.cache
def _bf16_supported() -> bool:
    """Whether this CPU runs oneDNN's bf16 products (AVX-512 or newer)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# bf16 biased products (x @ w^T + b) through the same op: torch's bf16 addmm is oneDNN's matmul
# too, but first copies the bias into every output row (W_o's 10 MB at the benchmark's sizes;
# the whole step's saving is within its noise: python -m dialoglab.bench --only utilisation,
# row "bf16 biased products through oneDNN's linear op: time saved" beside the A/A rows); its
# bf16 mm is as fast as the op. DIALOGLAB_ONEDNN_BF16=0 leaves bf16 to torch's addmm.
BF16_PRODUCTS = os.environ.get("DIALOGLAB_ONEDNN_BF16", "1") != "0"


def _layout_ok(a: torch.Tensor, w_t: torch.Tensor) -> bool:
    """oneDNN takes a @ w_t^T for 2-D CPU tensors, a row-major and not empty, w_t either layout."""
    return (
        a.device.type == "cpu"
        and a.dim() == 2
        and a.is_contiguous()
        and a.size(0) > 0
        and (w_t.is_contiguous() or w_t.t().is_contiguous())
    )


def _usable(a: torch.Tensor, w_t: torch.Tensor) -> bool:
    """oneDNN takes a @ w_t^T for fp32 where it is this CPU's default (`ENABLED`)."""
    return ENABLED and a.dtype == w_t.dtype == torch.float32 and _layout_ok(a, w_t)


def _bf16_usable(a: torch.Tensor, w_t: torch.Tensor) -> bool:
    """oneDNN takes a @ w_t^T + b for bf16 where the CPU has its bf16 products."""
    return (
        BF16_PRODUCTS
        and AVAILABLE
        and a.dtype == w_t.dtype == torch.bfloat16
        and _layout_ok(a, w_t)
        and _bf16_supported()
    )


def onednn_linear(
    a: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """a @ w_t^T (+ bias) through oneDNN's fp32 matmul, whatever `ENABLED` says (the build must
    have it: `AVAILABLE`)."""
    return torch.ops.mkldnn._linear_pointwise(a, w_t, bias, "none", [], "")


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for (M, K) a and (K, N) b."""
    if _usable(a, b.t()):
        return onednn_linear(a, b.t())
    return torch.mm(a, b)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b + bias for (M, K) a, (K, N) b and an (N,) bias."""
    w_t = b.t()
    if bias.dim() == 1 and bias.dtype == a.dtype and (_usable(a, w_t) or _bf16_usable(a, w_t)):
        return onednn_linear(a, w_t, bias)
    return torch.addmm(bias, a, b)


# oneDNN's inner-product weight gradient reads both operands row-major; MKL's d_y^T x needs d_y
# transposed. `weight_grad` uses it where the switch is on (DIALOGLAB_ONEDNN_WEIGHT_GRADS=0: off).
WEIGHT_GRADS = os.environ.get("DIALOGLAB_ONEDNN_WEIGHT_GRADS", "1") != "0"


def weight_grad(
    d_y: torch.Tensor,
    x: torch.Tensor,
    dtype: torch.dtype,
    with_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's weight gradient d_y^T x (N, K) for (M, N) d_y and (M, K) x, and with_bias
    d_y's column sums (N,), both in `dtype`: through oneDNN's inner-product weight gradient
    (`aten::mkldnn_linear_backward_weights` on oneDNN copies of both operands) for fp32, or
    torch.mm of the transposed d_y (MKL; summed in `dtype`) where oneDNN does not apply."""
    usable = _usable(d_y, x) and dtype == torch.float32 and d_y.size(1) > 0
    if WEIGHT_GRADS and usable:
        backward_weights = torch.ops.aten.mkldnn_linear_backward_weights
        like = d_y.new_empty(0)  # the op takes the gradient's dtype and device from a weight
        dw, db = backward_weights(d_y.to_mkldnn(), x.contiguous().to_mkldnn(), like, with_bias)
        return dw, db if with_bias else None
    dw = torch.mm(d_y.t(), x).to(dtype)
    return dw, d_y.sum(0, dtype=dtype) if with_bias else None


class LinearFunction(torch.autograd.Function):
    """x @ W^T + b with oneDNN products forward, for the input gradient (dY @ W) and for the
    weight gradient (`weight_grad`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        x2 = x.reshape(-1, x.size(-1))  # (M, K)
        y = addmm(bias, x2, weight.t()) if bias is not None else mm(x2, weight.t())  # (M, N)
        ctx.save_for_backward(x2, weight)
        ctx.has_bias, ctx.x_shape = bias is not None, x.shape
        return y.view(*x.shape[:-1], weight.size(0))

    @staticmethod
    def backward(ctx, d_y: torch.Tensor):
        x2, weight = ctx.saved_tensors
        d_y2 = d_y.reshape(-1, d_y.size(-1)).contiguous()  # (M, N)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = mm(d_y2, weight).view(ctx.x_shape)  # (M, K)
        if ctx.needs_input_grad[1]:
            with_bias = ctx.has_bias and ctx.needs_input_grad[2]
            dw, db = weight_grad(d_y2, x2, x2.dtype, with_bias)  # (N, K), (N,)
        elif ctx.has_bias and ctx.needs_input_grad[2]:
            db = d_y2.sum(0)
        return dx, dw, db


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a linear layer's products on x go through oneDNN here: fp32 input and weight on
    the CPU, no autocast, a non-empty input, oneDNN enabled."""
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.numel() > 0
    )


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`layer(x)` for an nn.Linear, through `LinearFunction` where oneDNN applies (fp32 on the
    CPU, no autocast); any other module (a quantized copy, say) is simply called."""
    if type(layer) is nn.Linear and applies(x, layer.weight):
        return LinearFunction.apply(x, layer.weight, layer.bias)
    return layer(x)
