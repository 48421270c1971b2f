"""The output layer and its summed cross-entropy as one autograd node.

`F.cross_entropy(x @ W^T + b, targets)` over a vocabulary costs, besides its products, five
passes over the (N, V) logits: log_softmax, its backward, the zero-filled gradient that
nll_loss's backward scatters into, and the zero-filled full-size gradient of the row slice that
cuts bucket padding off (`row_buckets`). At gru_attn's training sizes (640 x 8,000) those passes
took ~20-25 ms of a ~170 ms fp32 step on 2 CPU cores (`python -m dialoglab.bench --only
utilisation`, row "fused output layer + loss: time saved").

Here forward computes the logits, log_softmax once (the loss reads it at the targets), and
writes the logits' gradient, softmax - target distribution, over the logits themselves (they
are not needed again). Backward is then the layer's three products on that buffer, with the
incoming scalar gradient applied to the small operands (x and the bias sums) instead of a
fifth pass over (N, V). Loss and gradients equal `F.cross_entropy(..., reduction="sum")` on
fp32 logits to float rounding, label smoothing included (tests/unit/test_linear_cross_entropy.py).

Under CPU autocast (bf16-mixed) the products run in bf16 as the layer's would; the loss is
computed from the bf16 logits in fp32 (as `summed_nll`'s upcast does) and the gradient is
rounded to bf16 once.
Shapes: M rows (N real ones first, then zero padding rows), I input size, V vocabulary size.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.models.components import fused_gru, onednn
from dialoglab.models.components.column_major_linear import ColumnMajorLinear


def summed_nll(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Summed cross-entropy of (N, V) logits (upcast to fp32) against (N,) targets."""
    return F.cross_entropy(
        logits.float(), targets, reduction="sum", label_smoothing=label_smoothing
    )


# The loss pass in C++ where the extension builds (DIALOGLAB_COMPILED_XENT=0: ATen ops).
COMPILED_PASS = os.environ.get("DIALOGLAB_COMPILED_XENT", "1") != "0"


def kept_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`x[keep]` for (B, T, F) x and a (B, T) bool mask -> (N, F) in row-major order, as one
    index_select: its backward is an index_add of N rows, where boolean indexing's is a
    zero-filled (B, T, F) buffer and an accumulating index_put (~2.0 vs ~0.2 ms forward +
    backward at (64, 10, 1000) on 2 CPU cores, one-off timing)."""
    rows = keep.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions
    return x.reshape(-1, x.size(-1)).index_select(0, rows)


def _compiled_pass(logits: torch.Tensor) -> bool:
    """Whether the C++ pass (`softmax_xent.cpp`, in the fused GRU's extension) takes `logits`."""
    return (
        logits.device.type == "cpu"
        and logits.dtype in (torch.float32, torch.bfloat16)
        and logits.is_contiguous()
        and COMPILED_PASS
        and fused_gru.compiled_loops()
    )


def _xent_with_aten_ops(
    logits: torch.Tensor, targets: torch.Tensor, eps: float, write_grad: bool
) -> torch.Tensor:
    """The summed loss over the first N = len(targets) rows of (M, V) logits, and with
    `write_grad` dL/dlogits = softmax - ((1 - eps) one-hot + eps / V) written over the logits
    (zeros on rows [N, M)): `softmax_xent.cpp`'s pass in ATen ops."""
    N, V = targets.numel(), logits.size(1)
    loss_dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 logits: fp32 maths
    log_probs = torch.log_softmax(logits[:N], dim=1, dtype=loss_dtype)  # (N, V)
    loss = -(1.0 - eps) * log_probs.gather(1, targets.view(N, 1)).sum()
    if eps:  # the uniform part: the mean of every class's -log p
        loss = loss - eps / V * log_probs.sum()
    if write_grad:
        torch.exp(log_probs, out=logits[:N])
        logits[N:].zero_()  # padding rows
        logits[:N].scatter_add_(1, targets.view(N, 1), logits.new_full((N, 1), -(1.0 - eps)))
        if eps:
            logits[:N].sub_(eps / V)
    return loss


def column_sums(grad: torch.Tensor) -> torch.Tensor:
    """(M, V) -> (V,) column sums in fp32. A bf16 `grad` on the CPU is summed by a ones-row
    product (fp32 accumulation, rounded to bf16 once, as the weight gradient is): torch's bf16
    sum with an fp32 result converts element by element, ~1.2 ms against ~0.55 ms at
    (640, 8,000) on 2 CPU cores (one-off timing)."""
    if grad.dtype == torch.bfloat16 and grad.device.type == "cpu":
        return torch.mm(grad.new_ones(1, grad.size(0)), grad)[0].float()
    return grad.sum(0, dtype=torch.promote_types(grad.dtype, torch.float32))


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Summed cross-entropy of x @ W_t + b against targets; rows of x past len(targets) are
    padding (no loss, no gradient)."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,  # (M, I), M >= N
        weight_t: torch.Tensor,  # (I, V), either layout
        bias: torch.Tensor | None,  # (V,)
        targets: torch.Tensor,  # (N,) class ids
        label_smoothing: float,
    ) -> torch.Tensor:
        cd = fused_gru.compute_dtype(weight_t)  # autocast's bf16, or the weight's dtype
        with torch.autocast(x.device.type, enabled=False):
            x_c, w_c = x.to(cd).contiguous(), weight_t.to(cd)
            b_c = None if bias is None else bias.to(cd)
            logits = onednn.mm(x_c, w_c) if b_c is None else onednn.addmm(b_c, x_c, w_c)  # (M, V)
            eps = float(label_smoothing)
            backward = any(ctx.needs_input_grad[:3])
            # the losses, and where a backward follows the logits' gradient in their place
            if _compiled_pass(logits):  # one C++ pass per row
                loss = torch.ops.dialoglab_gru.softmax_xent_(logits, targets, eps, backward).sum()
            else:
                loss = _xent_with_aten_ops(logits, targets, eps, backward)
            if not backward:
                return loss
        ctx.save_for_backward(x_c, w_c, logits)  # logits: now dL/dlogits at d_loss = 1
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight_t.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, d_loss: torch.Tensor):
        x_c, w_c, grad = ctx.saved_tensors  # (M, I), (I, V), (M, V): dL/dlogits at d_loss = 1
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        scale = d_loss.to(x_c.dtype)  # 0-dim: applied to the small operands only
        dx = dw_t = db = None
        with torch.autocast(x_c.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                dx = onednn.mm(grad, w_c.t()).mul_(scale).to(x_dtype)  # (M, I)
            if ctx.needs_input_grad[1]:
                x_scaled_t = (x_c * scale).t().contiguous()  # (I, M), row-major for oneDNN
                dw_t = onednn.mm(x_scaled_t, grad).to(w_dtype)  # (I, V)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                db = (column_sums(grad) * d_loss).to(b_dtype)  # (V,)
        return dx, dw_t, db, None, None


def fused_applies(layer: nn.Module) -> bool:
    """Whether `linear_cross_entropy` fuses `layer`: a float nn.Linear or ColumnMajorLinear (a
    quantized copy, say, goes through its own forward and `summed_nll`)."""
    if type(layer) is ColumnMajorLinear:
        return layer.weight_t.is_floating_point()
    return type(layer) is nn.Linear and layer.weight.is_floating_point()


def linear_cross_entropy(
    x: torch.Tensor,
    layer: nn.Module,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """`summed_nll(layer(x)[:N], targets, label_smoothing)` for (M, I) x and (N,) targets,
    N <= M (the rows past N are padding, e.g. `row_buckets`' zero rows), in one autograd node
    where `fused_applies(layer)`."""
    if targets.dim() != 1 or targets.numel() > x.size(0):
        raise ValueError(
            f"linear_cross_entropy: targets must be (N,) with N <= x's {x.size(0)} rows, got "
            f"shape {tuple(targets.shape)}"
        )
    if not fused_applies(layer):
        return summed_nll(layer(x)[: targets.numel()], targets, label_smoothing)
    weight_t = layer.weight_t if type(layer) is ColumnMajorLinear else layer.weight.t()
    return LinearCrossEntropyFunction.apply(x, weight_t, layer.bias, targets, label_smoothing)
