"""A GRU layer loop for the CPU with a hand-derived backward: nn.GRU's maths, fewer kernels.

On the CPU `nn.GRU` runs its recurrence as a Python-free C++ loop, but autograd records every
step's small ops (slices, gate maths, a (3H, B) x (B, H) weight-gradient matmul per step) and
replays them one by one in backward. Here one autograd node covers a whole layer and direction:

  forward   gi = x W_ih^T + b            one (T*B, I) x (I, 3H) matmul for all steps
            per step: gh = h W_hh^T, r|z = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r * gh_n),
            h = n + z (h - n)            (PyTorch's GRU equations, gates ordered r, z, n)
  backward  per step only what depends on the next step's gradient (six elementwise ops and
            one (B, 3H) x (3H, H) matmul); the weight gradients and the input gradient are one
            big matmul each over all steps.

Padding is handled the way a packed sequence is: where `mask` is False the state passes through
unchanged and the output is 0. With lengths, `fused_gru` sorts the rows longest first (and
restores their order after), so at each step the rows still running are a prefix and only they
are computed (`active`): on Cornell-slice batches (~40 % padding) the fp32 step is ~1.1x faster
than computing every row. The reverse direction is the same loop over the time-flipped input,
so it starts from each sequence's last real token exactly as packing does.

Under CPU autocast (bf16-mixed) the whole layer runs in bf16: matmuls, gates and state, with
the weights cast once per call; the weight and bias gradients come back in fp32 (one bf16
matmul each, accumulated in fp32 inside the kernel). fp32 results equal nn.GRU's to float
rounding; bf16 ones stay close to them (tests/unit/test_fused_gru.py).
Shapes: T time steps, B batch, I input size, H hidden size; time-major inside this file.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's lower precision when CPU autocast is on, else the weights'."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return weight.dtype


class GRULayerFunction(torch.autograd.Function):
    """One GRU layer, one direction, over (T, B, I) time-major input."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,  # (T, B, I)
        h0: torch.Tensor,  # (B, H)
        w_ih: torch.Tensor,  # (3H, I)
        w_hh: torch.Tensor,  # (3H, H)
        b_ih: torch.Tensor,  # (3H,)
        b_hh: torch.Tensor,  # (3H,)
        mask: torch.Tensor | None,  # (T, B, 1) bool, True on real tokens; None: all real
        compute_dtype: torch.dtype,
        active: list[int] | None = None,  # per step: rows [:n] are real, the rest padding
    ) -> tuple[torch.Tensor, torch.Tensor]:
        T, B, I = x.shape  # noqa: E741 (I: input size, as in the docstring)
        H = w_hh.size(1)
        cd = compute_dtype  # matmuls, gates and state: the weights' dtype, or autocast's bf16
        with torch.autocast("cpu", enabled=False):
            # b_hh's r and z parts are folded into gi; its n part stays inside r * (W_hn h + b_hn).
            b_gi = (b_ih + torch.cat([b_hh[: 2 * H], b_hh.new_zeros(H)])).to(cd)
            b_gh = torch.cat([b_hh.new_zeros(2 * H), b_hh[2 * H :]]).to(cd)
            w_ih_t = w_ih.t().to(cd)  # (I, 3H)
            w_hh_t = w_hh.t().to(cd)  # (H, 3H), a transposed view when no cast is needed
            gi = torch.addmm(b_gi, x.reshape(T * B, I).to(cd), w_ih_t).view(T, B, 3 * H)
            # With `active`, padding rows are skipped: their gate buffers stay 0 (finite for backward).
            new = x.new_empty if active is None else x.new_zeros
            gh = new(T, B, 3 * H, dtype=cd)  # h W_hh^T + (0, 0, b_hn)
            rz = new(T, B, 2 * H, dtype=cd)  # sigmoid gates r | z
            n = new(T, B, H, dtype=cd)  # candidate state
            hs = x.new_empty(T, B, H, dtype=cd)  # state after each step
            h = h0.to(cd)
            for t in range(T):
                k = B if active is None else active[t]  # rows [:k] take a step
                if k < B:
                    hs[t, k:] = h[k:]  # padding: the state passes through
                if k > 0:
                    torch.addmm(b_gh, h[:k], w_hh_t, out=gh[t, :k])
                    torch.sigmoid(gi[t, :k, : 2 * H] + gh[t, :k, : 2 * H], out=rz[t, :k])
                    r, z = rz[t, :k, :H], rz[t, :k, H:]
                    pre_n = torch.addcmul(gi[t, :k, 2 * H :], r, gh[t, :k, 2 * H :])
                    torch.tanh(pre_n, out=n[t, :k])
                    if mask is None or active is not None:
                        torch.lerp(n[t, :k], h[:k], z, out=hs[t, :k])  # n + z * (h - n)
                    else:
                        torch.where(mask[t], torch.lerp(n[t], h, z), h, out=hs[t])
                h = hs[t]
            outputs = hs if mask is None else hs * mask
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x, h0, w_ih, w_hh, rz, n, gh, hs, mask)
            ctx.compute_dtype = compute_dtype
            ctx.active = active
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, d_outputs: torch.Tensor, d_h_n: torch.Tensor):
        x, h0, w_ih, w_hh, rz, n, gh, hs, mask = ctx.saved_tensors
        cd = ctx.compute_dtype
        T, B, I = x.shape  # noqa: E741 (I: input size, as in the docstring)
        H = w_hh.size(1)
        with torch.autocast("cpu", enabled=False):
            h_prev = torch.cat([h0.to(cd).unsqueeze(0), hs[:-1]])  # (T, B, H)
            r, z = rz[..., :H], rz[..., H:]
            # Everything that does not depend on the incoming state gradient, for all steps.
            c_n = (1 - z) * (1 - n * n)  # dL/d(n pre-activation) = dh * c_n
            c_z = (h_prev - n) * z * (1 - z)  # dL/d(z pre-activation) = dh * c_z
            c_r = gh[..., 2 * H :] * r * (1 - r)  # dL/d(r pre-activation) = dn_pre * c_r
            keep = z  # dh flowing straight to the previous state
            d_out = d_outputs.to(cd)
            if mask is not None:
                m = mask.to(cd)
                c_n, c_z, d_out = c_n * m, c_z * m, d_out * m
                keep = z * m + (1 - m)
            w_hh_c = w_hh.to(cd)  # (3H, H)
            active = ctx.active
            new = x.new_empty if active is None else x.new_zeros  # padding rows' gradients: 0
            d_gh = new(T, B, 3 * H, dtype=cd)  # dL/d(h W_hh^T + b_hh)
            d_gi_n = new(T, B, H, dtype=cd)  # dL/d(gi_n)
            dh = d_h_n.to(cd, copy=True)
            for t in range(T - 1, -1, -1):
                dh = dh + d_out[t]
                k = B if active is None else active[t]  # rows [:k] took a step
                if k == 0:
                    continue
                dh_k = dh[:k]
                dn_pre = torch.mul(dh_k, c_n[t, :k], out=d_gi_n[t, :k])
                torch.mul(dn_pre, c_r[t, :k], out=d_gh[t, :k, :H])
                torch.mul(dh_k, c_z[t, :k], out=d_gh[t, :k, H : 2 * H])
                torch.mul(dn_pre, r[t, :k], out=d_gh[t, :k, 2 * H :])
                stepped = torch.addmm(dh_k * keep[t, :k], d_gh[t, :k], w_hh_c)
                if k == B:
                    dh = stepped
                else:
                    dh[:k] = stepped
            d_gi = torch.cat([d_gh[..., : 2 * H], d_gi_n], dim=-1).view(T * B, 3 * H)
            d_gh2d = d_gh.view(T * B, 3 * H)
            dx = dw_ih = dw_hh = db_ih = db_hh = None
            if ctx.needs_input_grad[0]:
                dx = torch.mm(d_gi, w_ih.to(cd)).view(T, B, I).to(x.dtype)
            if ctx.needs_input_grad[2]:
                dw_ih = torch.mm(d_gi.t(), x.reshape(T * B, I).to(cd)).to(w_ih.dtype)
            if ctx.needs_input_grad[3]:
                dw_hh = torch.mm(d_gh2d.t(), h_prev.view(T * B, H)).to(w_hh.dtype)
            if ctx.needs_input_grad[4]:
                db_ih = d_gi.sum(0, dtype=w_ih.dtype)
            if ctx.needs_input_grad[5]:
                db_hh = d_gh2d.sum(0, dtype=w_hh.dtype)
            dh0 = dh.to(h0.dtype) if ctx.needs_input_grad[1] else None
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None, None


def supports_fused(rnn: nn.Module, x: torch.Tensor) -> bool:
    """True when `fused_gru` should stand in for `rnn` on `x`: a batch-first CPU nn.GRU with
    biases and fp32 weights (not a quantized or bf16 copy, and not CUDA, where cuDNN's fused
    kernels win), with or without bf16 autocast."""
    return (
        type(rnn) is nn.GRU
        and rnn.bias
        and rnn.batch_first
        and x.device.type == "cpu"
        and rnn.weight_hh_l0.dtype == torch.float32
    )


def fused_gru(
    rnn: nn.GRU,
    x: torch.Tensor,
    h0: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `rnn`'s weights over batch-first x (B, T, I) -> outputs (B, T, D*H), h_n (L*D, B, H).

    The same results as `rnn(pack_padded_sequence(x, lengths))` unpacked to length T (padding
    outputs are 0, h_n is each sequence's state at its last real token), or `rnn(x, h0)`
    without lengths. Dropout between layers follows rnn.dropout in training mode.
    """
    B, T, _ = x.shape
    H, L = rnn.hidden_size, rnn.num_layers
    D = 2 if rnn.bidirectional else 1
    compute_dtype = _compute_dtype(rnn.weight_hh_l0)
    if h0 is None:
        h0 = x.new_zeros(L * D, B, H, dtype=rnn.weight_hh_l0.dtype)
    mask = active = restore = None
    if lengths is not None:
        # Rows sorted by length (longest first), as packing does: at each step the rows still
        # running are a prefix, and only they are computed.
        lengths, order = lengths.to(x.device).sort(descending=True, stable=True)
        positions = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
        mask = (positions < lengths.unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
        in_order = (order[1:] > order[:-1]).all().view(1)
        *active, in_order = torch.cat([mask.sum(dim=(1, 2)), in_order]).tolist()  # one sync
        if not in_order:
            x, h0, restore = x.index_select(0, order), h0.index_select(1, order), order.argsort()
    layer_input = x.transpose(0, 1).contiguous()  # (T, B, I)
    finals = []
    for layer in range(L):
        if layer > 0 and rnn.dropout > 0 and rnn.training:
            layer_input = F.dropout(layer_input, rnn.dropout, training=True)
        outputs = []
        for direction in range(D):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights = [getattr(rnn, f"{name}{suffix}") for name in _PARAM_NAMES]
            inputs, step_mask, step_active = layer_input, mask, active
            if direction:  # reverse: run forward over the time-flipped sequence
                inputs = layer_input.flip(0)
                step_mask = mask.flip(0) if mask is not None else None
                step_active = active[::-1] if active is not None else None
            out, h_n = GRULayerFunction.apply(
                inputs, h0[layer * D + direction], *weights, step_mask, compute_dtype, step_active
            )
            outputs.append(out.flip(0) if direction else out)
            finals.append(h_n)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*H)
    outputs, h_n = layer_input.transpose(0, 1), torch.stack(finals)  # (B, T, D*H), (L*D, B, H)
    if restore is not None:  # back to the caller's row order
        outputs, h_n = outputs.index_select(0, restore), h_n.index_select(1, restore)
    return outputs, h_n


_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
