"""nn.GRU's maths on the CPU as one autograd node per layer and direction, with fewer kernels.

On the CPU `nn.GRU` runs its recurrence in C++, but autograd records every step's small ops and
replays them one by one in backward. Here one autograd node covers a whole layer and direction:

  forward   gi = x W_ih^T + b            one (N, I) x (I, 3H) matmul for all N real tokens
            per step: gh = h W_hh^T, r|z = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r * gh_n),
            h = n + z (h - n)            (PyTorch's GRU equations, gates ordered r, z, n)
  backward  per step only what depends on the next step's gradient; the weight gradients and
            the input gradient are one big matmul each over all steps.

Padding is skipped as packing skips it: rows are sorted longest first, so at each step the rows
still running are a prefix (`active`) and only they take a step; padding outputs are 0. Under
CPU autocast (bf16-mixed) the layer runs in bf16 and its weight gradients come back in fp32.

The two time loops also exist in C++ (`csrc/fused_gru_loops.cpp`, each step's gate maths in one
vectorised pass), used when the extension is built (`dialoglab.accel.extension`); otherwise the
Python loops below do the same work. tests/accel/test_fused_gru.py holds both equal to nn.GRU.
Shapes: T time steps, B batch, I input size, H hidden size; time-major inside this file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.accel.extension import compiled_ops
from dialoglab.accel.row_buckets import for_products_in


def compiled_loops() -> bool:
    """Whether the C++ time loops are loaded (`dialoglab.accel.extension`)."""
    return compiled_ops() is not None


def _gate_pass(dtype: torch.dtype) -> bool:
    """Whether the C++ loops do a step's gate maths in one pass of their own (fp32 and bf16)."""
    return dtype in (torch.float32, torch.bfloat16)


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's lower precision when autocast is on for the weight's device,
    else the weight's own."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def pack_steps(x: torch.Tensor, active: list[int]) -> torch.Tensor:
    """(T, B, F) time-major -> (N, F): the real rows of every step, step after step (the layout
    of a PackedSequence's data; a view when no row is padding)."""
    T, B = x.shape[:2]
    if all(k == B for k in active):
        return x.reshape(T * B, -1)
    pieces = [x[t, :k] for t, k in enumerate(active) if k]
    return torch.cat(pieces) if pieces else x.new_empty(0, x.size(2))


def _unpack(packed: torch.Tensor, active: list[int], B: int) -> torch.Tensor:
    """`pack_steps`'s inverse: (N, F) -> (T, B, F) with zeros on padding."""
    T = len(active)
    if all(k == B for k in active):
        return packed.view(T, B, -1)
    out = packed.new_zeros(T, B, packed.size(1))
    offset = 0
    for t, k in enumerate(active):
        out[t, :k] = packed[offset : offset + k]
        offset += k
    return out


def zero_padding(hs: torch.Tensor, active: list[int], n_real: int) -> torch.Tensor:
    """States (T, B, H) as outputs: 0 on padding (rows [active[t]:] of step t)."""
    T, B = hs.shape[:2]
    if n_real == T * B:
        return hs
    running = torch.tensor(active, device=hs.device).unsqueeze(1)  # (T, 1)
    real = torch.arange(B, device=hs.device) < running  # (T, B)
    return hs * real.unsqueeze(-1)  # (T, B, H)


def forward_steps(
    gi: torch.Tensor,
    h0: torch.Tensor,
    b_gh: torch.Tensor,
    active: list[int],
    zero_state: bool,
    product: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward time loop in Python (the C++ one is gru_gates.h's `forward_steps`): gi (N, 3H)
    is each real token's input projection, `product(h_k)` gives h_k W_hh^T + b_gh for the k
    running rows, b_gh alone is the product from a zero state. Returns gh (N, 3H) (the products
    per token), rz (N, 2H), n (N, H) and the states hs (T, B, H)."""
    T, (B, H), N = len(active), h0.shape, gi.size(0)
    rz = gi.new_empty(N, 2 * H)  # sigmoid gates r | z
    n = gi.new_empty(N, H)  # candidate state
    hs = gi.new_empty(T, B, H)  # state after each step
    gh_steps = []  # per step (k, 3H)
    h, offset = h0, 0
    for t, k in enumerate(active):
        if k < B:
            hs[t, k:] = h[k:]  # padding: the state passes through
        if k:
            s = slice(offset, offset + k)
            first = zero_state and offset == 0  # no row has stepped yet: h = 0
            gh_t = b_gh.expand(k, 3 * H) if first else product(h[:k])  # (k, 3H)
            gh_steps.append(gh_t)
            torch.sigmoid(gi[s, : 2 * H] + gh_t[:, : 2 * H], out=rz[s])
            r, z = rz[s, :H], rz[s, H:]
            torch.tanh(torch.addcmul(gi[s, 2 * H :], r, gh_t[:, 2 * H :]), out=n[s])
            torch.lerp(n[s], h[:k], z, out=hs[t, :k])  # n + z * (h - n)
            offset += k
        h = hs[t]
    gh = torch.cat(gh_steps) if gh_steps else gi.new_empty(0, 3 * H)
    return gh, rz, n, hs


class GRULayerFunction(torch.autograd.Function):
    """One GRU layer, one direction, over (T, B, I) time-major input whose rows are sorted by
    length: at step t rows [:active[t]] are real tokens (they take a step), the rest padding (the
    state passes through, the output is 0). Everything per token is held packed, (N, .) over the
    N real tokens, so padding costs no matmul and no gate maths."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,  # (T, B, I)
        h0: torch.Tensor,  # (B, H)
        w_ih: torch.Tensor,  # (3H, I)
        w_hh: torch.Tensor,  # (3H, H)
        b_ih: torch.Tensor,  # (3H,)
        b_hh: torch.Tensor,  # (3H,)
        active: list[int],  # T counts, non-increasing rows per step (B everywhere: no padding)
        compute_dtype: torch.dtype,
        zero_state: bool = False,  # h0 is all zeros: the first step's h W_hh^T is skipped
    ) -> tuple[torch.Tensor, torch.Tensor]:
        H = w_hh.size(1)
        cd = compute_dtype  # matmuls, gates and state: the weights' dtype, or autocast's bf16
        with torch.autocast("cpu", enabled=False):
            # b_hh's r and z parts are folded into gi; its n part stays inside r * (W_hn h + b_hn).
            b_gi = (b_ih + torch.cat([b_hh[: 2 * H], b_hh.new_zeros(H)])).to(cd)
            b_gh = torch.cat([b_hh.new_zeros(2 * H), b_hh[2 * H :]]).to(cd)
            w_ih_c, w_hh_c = w_ih.to(cd), w_hh.to(cd)  # cast once (kept for backward), or as is
            w_ih_t, w_hh_t = w_ih_c.t(), w_hh_c.t()  # (I, 3H), (H, 3H): transposed views
            x_p = pack_steps(x, active).to(cd)  # (N, I)
            N = x_p.size(0)
            x_p = for_products_in(x_p, cd)  # (N', I): bf16 row buckets, zero rows after N
            gi = torch.addmm(b_gi, x_p, w_ih_t)[:N]  # (N, 3H), all steps at once
            if compiled_loops():  # forward_steps below, in C++
                gh, rz, n, hs = torch.ops.dialoglab_gru.forward_loop(
                    gi, h0.to(cd).contiguous(), w_hh_c, b_gh, active, zero_state, _gate_pass(cd)
                )
            else:
                product = functools.partial(torch.addmm, b_gh, mat2=w_hh_t)  # h_k W_hh^T + b_gh
                gh, rz, n, hs = forward_steps(gi, h0.to(cd), b_gh, active, zero_state, product)
            h = hs[-1]
            outputs = zero_padding(hs, active, N)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x_p, h0, w_ih_c, w_hh_c, rz, n, gh, hs)
            ctx.active, ctx.compute_dtype, ctx.x_dtype = active, compute_dtype, x.dtype
            ctx.w_dtype = w_ih.dtype
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, d_outputs: torch.Tensor, d_h_n: torch.Tensor):
        x_p, h0, w_ih_c, w_hh_c, rz, n, gh, hs = ctx.saved_tensors  # weights in compute dtype
        active, cd, wd = ctx.active, ctx.compute_dtype, ctx.w_dtype
        B = hs.size(1)
        with torch.autocast("cpu", enabled=False):
            h_prev = pack_steps(torch.cat([h0.to(cd).unsqueeze(0), hs[:-1]]), active)  # (N, H)
            d_out = d_outputs.to(cd)
            parts = None  # the bias gradients' column sums (4H, fp32), where the loop makes them
            if compiled_loops() and _gate_pass(cd):  # gate gradients inside the C++ loop
                d_gh, d_gi, dh, parts = torch.ops.dialoglab_gru.backward_loop_fused(
                    d_out, d_h_n.to(cd), h0.to(cd), hs, gh, rz, n, w_hh_c, active,
                    ctx.needs_input_grad[1],
                )  # fmt: skip
            else:
                d_gh, d_gi, dh = _backward_steps(ctx, d_out, d_h_n, h_prev, rz, n, gh, w_hh_c)
            dx = dw_ih = dw_hh = db_ih = db_hh = None
            N = d_gi.size(0)
            d_gi, d_gh, h_prev = (for_products_in(t, cd) for t in (d_gi, d_gh, h_prev))
            if ctx.needs_input_grad[0]:
                dx = _unpack(torch.mm(d_gi, w_ih_c)[:N], active, B).to(ctx.x_dtype)
            H = hs.size(2)
            biases = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
            if ctx.needs_input_grad[2]:
                dw_ih = weight_grad(d_gi, x_p, wd)
            if ctx.needs_input_grad[3]:
                dw_hh = weight_grad(d_gh, h_prev, wd)
            if biases:
                if parts is None:  # the C++ loop summed them; else passes over d_gi and d_gh
                    parts = torch.cat([d_gi.sum(0, dtype=wd), d_gh[:, 2 * H :].sum(0, dtype=wd)])
                # d_gi's column sums (3H), then d_gh's n columns' (H): d_gh's r and z columns
                # are d_gi's, so b_hh's gradient shares those.
                db_ih = parts[: 3 * H].to(wd)
                db_hh = torch.cat([db_ih[: 2 * H], parts[3 * H :].to(wd)])
            dh0 = dh.to(h0.dtype) if ctx.needs_input_grad[1] else None
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None, None


def weight_grad(d_y: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A weight's gradient d_y^T x (N, K) for (M, N) d_y and (M, K) x, in `dtype`."""
    return torch.mm(d_y.t(), x).to(dtype)


def _backward_steps(
    ctx,
    d_out: torch.Tensor,
    d_h_n: torch.Tensor,
    h_prev: torch.Tensor,
    rz: torch.Tensor,
    n: torch.Tensor,
    gh: torch.Tensor,
    w_hh_c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`GRULayerFunction`'s backward time loop (any dtype; C++ when built) -> d_gh (N, 3H),
    d_gi (N, 3H) and dh (B, H), the state gradient into h0."""
    active, cd = ctx.active, ctx.compute_dtype
    T, B, H = len(active), d_h_n.size(0), d_h_n.size(1)
    r, z = rz[:, :H], rz[:, H:]
    N = gh.size(0)
    # Everything that does not depend on the incoming state gradient dh, for all tokens:
    # dL/d(n pre-activation) = dh * c_n, dL/d(z pre-act.) = dh * c_z, and through
    # n = tanh(gi_n + r * gh_n): dL/d(r pre-act.) = dh * c_n * gh_n * r (1 - r) and
    # dL/d(gh_n) = dh * c_n * r. So dL/d(gh) = dh * c_gh, one product per step.
    c_n = (1 - z) * (1 - n * n)  # (N, H)
    c_gh = gh.new_empty(N, 3, H)  # r | z | n parts
    torch.mul(c_n, gh[:, 2 * H :] * r * (1 - r), out=c_gh[:, 0])
    torch.mul((h_prev - n) * z, 1 - z, out=c_gh[:, 1])
    torch.mul(c_n, r, out=c_gh[:, 2])
    steps = range(T - 1, -1, -1)
    if compiled_loops():  # the loop below, in C++
        d_gh, d_h, dh = torch.ops.dialoglab_gru.backward_loop(
            d_out, d_h_n.to(cd), c_gh, z, w_hh_c, active, ctx.needs_input_grad[1]
        )
        steps = range(0)
    else:
        d_gh = torch.empty_like(gh)  # dL/d(h W_hh^T + b_hh), (N, 3H)
        d_h = torch.empty_like(n)  # dL/dh at each step's output, (N, H)
        dh = d_h_n.to(cd, copy=True)  # (B, H); padding rows pass it through unchanged
    offset = N
    for t in steps:
        k = active[t]
        if not k:
            continue
        offset -= k
        s = slice(offset, offset + k)
        dh_k = torch.add(dh[:k], d_out[t, :k], out=d_h[s])  # (k, H)
        torch.mul(dh_k.unsqueeze(1), c_gh[s], out=d_gh[s].view(k, 3, H))
        if offset == 0 and not ctx.needs_input_grad[1]:
            break  # the first step: its state gradient would only flow into h0
        stepped = torch.addcmul(torch.mm(d_gh[s], w_hh_c), dh_k, z[s])
        dh = stepped if k == B else torch.cat([stepped, dh[k:]])
    d_gi = torch.cat([d_gh[:, : 2 * H], d_h * c_n], dim=1)  # (N, 3H)
    return d_gh, d_gi, dh


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
    dtype = compute_dtype(rnn.weight_hh_l0)

    def layer(
        suffix: str, x: torch.Tensor, h0: torch.Tensor, active: list[int], zero_state: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = [getattr(rnn, f"{name}{suffix}") for name in _PARAM_NAMES]
        return GRULayerFunction.apply(x, h0, *weights, active, dtype, zero_state)

    return run_layers(rnn, layer, x, h0, lengths, rnn.weight_hh_l0.dtype)


LayerFn = Callable[[str, torch.Tensor, torch.Tensor, list[int], bool], tuple[torch.Tensor, ...]]


def run_layers(
    rnn: nn.Module,
    layer: LayerFn,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    lengths: torch.Tensor | None,
    state_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fused_gru`'s driver, for any GRU-like `rnn` (hidden_size, num_layers, bidirectional,
    dropout): rows sorted by length, then per layer and direction `layer(suffix, x (T, B, I),
    h0 (B, H), active, zero_state) -> (outputs (T, B, H), h_n (B, H))`, where suffix names the
    weights as nn.GRU does (`_l0`, `_l0_reverse`, ...)."""
    B, T, _ = x.shape
    H, L = rnn.hidden_size, rnn.num_layers
    D = 2 if rnn.bidirectional else 1
    zero_state = h0 is None
    if zero_state:
        h0 = x.new_zeros(L * D, B, H, dtype=state_dtype)
    active, restore = [B] * T, None  # rows that take a step at each time step
    if lengths is not None:
        # Rows sorted by length (longest first), as packing does: at each step the rows still
        # running are a prefix, and only they are computed.
        lengths, order = lengths.to(x.device).sort(descending=True, stable=True)
        positions = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
        running = (positions < lengths.unsqueeze(0)).sum(dim=1)  # (T,)
        in_order = (order[1:] > order[:-1]).all().view(1)
        *active, in_order = torch.cat([running, in_order]).tolist()  # one host sync
        if not in_order:
            x, h0, restore = x.index_select(0, order), h0.index_select(1, order), order.argsort()
    layer_input = x.transpose(0, 1).contiguous()  # (T, B, I)
    finals = []
    for index in range(L):
        if index > 0 and rnn.dropout > 0 and rnn.training:
            layer_input = F.dropout(layer_input, rnn.dropout)
        outputs = []
        for direction in range(D):
            suffix = f"_l{index}" + ("_reverse" if direction else "")
            inputs, step_active = layer_input, active
            if direction:  # reverse: run forward over the time-flipped sequence
                inputs, step_active = layer_input.flip(0), active[::-1]
            out, h_n = layer(suffix, inputs, h0[index * D + direction], step_active, zero_state)
            outputs.append(out.flip(0) if direction else out)
            finals.append(h_n)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*H)
    outputs, h_n = layer_input.transpose(0, 1), torch.stack(finals)  # (B, T, D*H), (L*D, B, H)
    if restore is not None:  # back to the caller's row order
        outputs, h_n = outputs.index_select(0, restore), h_n.index_select(1, restore)
    return outputs, h_n


_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
