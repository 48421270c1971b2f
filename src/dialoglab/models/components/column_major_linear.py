"""`nn.Linear` with its weight held as the contiguous (in, out) transpose: a faster output layer.

A linear layer's training step runs three products: y = x W^T, dx = dy W and dW = dy^T x. With W
stored (out, in), as nn.Linear stores it, the weight gradient has a transposed left operand,
which neither MKL nor oneDNN runs near peak on the CPU. Held as W^T (in, out) instead, the
gradient of that storage is x^T dy, and all three products go through oneDNN with a row-major
left operand (`onednn.py`); only x^T is copied, which is small when `in` is. For gru_attn's
output layer (500 -> 8,000) the fp32 training step got 23-30 ms faster on 2 CPU cores
(`python -m dialoglab.bench --only utilisation`, row "W_o stored (in, out): time saved (fp32
step)"; neutral under bf16 autocast). The parameter is contiguous, so fused Adam stays on its
fast path (with a transposed *view* as the parameter it runs several times slower).

Everything else sees an nn.Linear: `weight` is the (out, in) view of the same storage, the
state dict holds `weight` (out, in), so checkpoints and `save_pretrained` files are the same as
with nn.Linear and load into either, and `to_linear()` gives the equal nn.Linear (for
quantization). Other dtypes, devices and bf16 autocast call `F.linear` on the view (GPUs read a
transposed weight natively).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.models.components import onednn


class ColumnMajorLinearFunction(torch.autograd.Function):
    """x @ W_t + b for W_t (in, out): every product through oneDNN, row-major left operands."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None):
        x2 = x.reshape(-1, x.size(-1))  # (M, in)
        y = onednn.addmm(bias, x2, weight_t) if bias is not None else onednn.mm(x2, weight_t)
        ctx.save_for_backward(x2, weight_t)
        ctx.has_bias, ctx.x_shape = bias is not None, x.shape
        return y.view(*x.shape[:-1], weight_t.size(1))  # (..., out)

    @staticmethod
    def backward(ctx, d_y: torch.Tensor):
        x2, weight_t = ctx.saved_tensors
        d_y2 = d_y.reshape(-1, d_y.size(-1)).contiguous()  # (M, out)
        dx = dw_t = db = None
        if ctx.needs_input_grad[0]:
            dx = onednn.mm(d_y2, weight_t.t()).view(ctx.x_shape)  # (M, in)
        if ctx.needs_input_grad[1]:
            dw_t = onednn.mm(x2.t().contiguous(), d_y2)  # (in, out), the storage's own layout
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = d_y2.sum(0)
        return dx, dw_t, db


class ColumnMajorLinear(nn.Module):
    """y = x W^T + b like nn.Linear(in_features, out_features), with W stored as W^T (in, out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) weight: a view of `weight_t`'s storage."""
        return self.weight_t.t()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, drawn in its (out, in) order: with the same seed the
        values equal an nn.Linear's."""
        with torch.no_grad():
            weight = torch.empty_like(self.weight_t.t(), memory_format=torch.contiguous_format)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.weight_t.copy_(weight.t())
            if self.bias is not None:
                bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn.applies(x, self.weight_t):
            return ColumnMajorLinearFunction.apply(x, self.weight_t, self.bias)
        return F.linear(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> ColumnMajorLinear:
        """The equal layer of an nn.Linear (values copied)."""
        w = linear.weight
        layer = cls(w.size(1), w.size(0), linear.bias is not None, w.device, w.dtype)
        layer.load_state_dict(linear.state_dict())
        return layer

    def to_linear(self) -> nn.Linear:
        """The equal nn.Linear (values copied, (out, in) contiguous)."""
        w = self.weight_t
        layer = nn.Linear(self.in_features, self.out_features, self.bias is not None, w.device)
        layer.to(w.dtype).load_state_dict(self.state_dict())
        return layer

    # The state dict speaks nn.Linear: `weight` (out, in), the same tensor storage.
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        weight_t = destination.pop(prefix + "weight_t")
        destination[prefix + "weight"] = weight_t.t()
        destination.move_to_end(prefix + "weight", last=False)  # nn.Linear's order

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        key, own = prefix + "weight", prefix + "weight_t"
        mismatched = False
        if key in state_dict:
            weight = state_dict.pop(key)
            if weight.shape == self.weight.shape:
                state_dict[own] = weight.t()
            else:
                mismatched = True
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)} "
                    f"from checkpoint, the shape in current model is {tuple(self.weight.shape)}."
                )
        before = len(missing_keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        # Name the missing weight as the state dict does; a mismatched one is not missing.
        missing = [key if k == own else k for k in missing_keys[before:]]
        missing_keys[before:] = [k for k in missing if not (mismatched and k == key)]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, stored (in, out)"
        )
