"""gru_attn's int8 inference (`quantize=int8`): torch.ao's int8 weights, run faster.

`torch.ao.quantization.quantize_dynamic` turns an nn.GRU into a dynamically quantized GRU whose
int8 products are fast (fbgemm) but whose gate maths is a dozen small ATen ops per layer and
step, and whose packed-sequence path (gru_attn's encoder) steps cell by cell; and each of its
ops called from Python costs several microseconds of argument checking, a large share of a
batch-1 token. Two classes keep those int8 weights and run them with less around them:

`Int8GRU` runs a GRU the way `fused_gru` runs fp32 ones (rows sorted by length, padding not
computed), its time loop in C++ (`int8_decoding.cpp`):

  per layer and direction   gi = x W_ih^T + b_ih     one int8 product for all steps
  per step                  gh = h W_hh^T + b_hh     one int8 product
                            r, z, n, h               one fp32 pass (`gru_gates.h`)

`Int8DecoderStep` is the decoder's whole one-token step (embedding, GRU layers, attention,
W_c, W_o) as one C++ call (`csrc/int8_decoding.cpp`); `accel.gru_attn.Int8StepDecoder` calls it.
`accel.gru_attn.use_int8_kernels(net)` puts both in place after `quantize=int8`.

Activations are quantized per product with reduce_range, as torch.ao's modules do: results
equal torch.ao's to float rounding (tests/accel/test_int8_gru.py). Without the C++ extension `Int8GRU` loops in Python
and the decoder steps stay on the Python path.

    qgru = torch.ao.quantization.quantize_dynamic(nn.Sequential(gru), {nn.GRU})[0]
    fast = Int8GRU.from_quantized(qgru)
    outputs, h_n = fast(x, h0, lengths=lengths)  # nn.GRU's outputs; lengths as packing

Inference only: no gradients, no dropout. Shapes as in `fused_gru`: T time steps, B batch,
I input size, H hidden size.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from dialoglab.accel.fused_gru import (
    compiled_loops,
    forward_steps,
    pack_steps,
    run_layers,
    zero_padding,
)

REDUCE_RANGE = True  # activations quantized to 7 bits, as torch.ao's dynamic GRU does on x86


def _linear_int8(x: torch.Tensor, packed: Any) -> torch.Tensor:
    """x W^T + b through a packed int8 weight (fbgemm's dynamic quantized product)."""
    return torch.ops.quantized.linear_dynamic(x, packed, REDUCE_RANGE)


class Int8GRU(nn.Module):
    """nn.GRU's interface (batch-first or not, uni- or bidirectional) over int8 weights; also
    takes `lengths` (B,) instead of a packed sequence. Built by `from_quantized`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        batch_first: bool,
        packed: dict[str, Any],
        biases: dict[str, torch.Tensor],
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first = bidirectional, batch_first
        self.dropout = 0.0  # inference: no dropout between layers
        self.packed = packed  # "weight_ih_l0" -> quantized::linear_prepack(int8 weight, bias)
        for name, bias in biases.items():  # b_hh, the first step's product from a zero state
            self.register_buffer(name, bias)

    @staticmethod
    def supports(qgru: nn.Module) -> bool:
        """Whether `from_quantized` takes this torch.ao dynamic GRU (qint8 weights)."""
        return qgru.mode == "GRU" and qgru.dtype == torch.qint8

    @classmethod
    def from_quantized(cls, qgru: nn.Module) -> Int8GRU:
        """The int8 weights and fp32 biases of a `torch.ao.nn.quantized.dynamic.GRU`."""
        if not cls.supports(qgru):
            raise ValueError(f"Int8GRU needs a qint8 dynamic GRU, got {qgru!r}")
        quantized = qgru._weight_bias()
        weights, biases = quantized["weight"], quantized["bias"]
        packed = {
            name: torch.ops.quantized.linear_prepack(weight, biases[name.replace("weight", "bias")])
            for name, weight in weights.items()
        }
        b_hh = {
            name: bias.detach().float().contiguous()
            for name, bias in biases.items()
            if name.startswith("bias_hh")
        }
        return cls(
            qgru.input_size,
            qgru.hidden_size,
            qgru.num_layers,
            qgru.bidirectional,
            qgru.batch_first,
            packed,
            b_hh,
        )

    def forward(
        self,
        x: torch.Tensor,
        hx: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, I) (batch_first) or (T, B, I), hx (L*D, B, H) -> outputs, h_n (L*D, B, H).
        With `lengths`, padding outputs are 0 and h_n is each row's state at its last token."""
        if not self.batch_first:
            x = x.transpose(0, 1)
        with torch.no_grad():
            outputs, h_n = run_layers(self, self._layer, x.float(), hx, lengths, torch.float32)
        return (outputs if self.batch_first else outputs.transpose(0, 1)), h_n

    def _layer(
        self, suffix: str, x: torch.Tensor, h0: torch.Tensor, active: list[int], zero_state: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer and direction over (T, B, I) -> outputs (T, B, H), h_n (B, H)."""
        gi = _linear_int8(pack_steps(x, active), self.packed[f"weight_ih{suffix}"])  # (N, 3H)
        w_hh, b_hh = self.packed[f"weight_hh{suffix}"], getattr(self, f"bias_hh{suffix}")
        h0 = h0.float().contiguous()
        if compiled_loops():
            hs = torch.ops.dialoglab_gru.int8_forward_loop(gi, h0, w_hh, b_hh, active, zero_state)
        else:  # the same loop in Python
            product = functools.partial(_linear_int8, packed=w_hh)
            hs = forward_steps(gi, h0, b_hh, active, zero_state, product)[3]
        return zero_padding(hs, active, gi.size(0)), hs[-1].clone()

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, weights=int8"
        )


class Int8DecoderStep:
    """gru_attn's `Decoder` for one token, in C++ (`int8_decoding.cpp`), over the decoder's own
    int8 layers: embedding, `Int8GRU` layers, attention, tanh(W_c [h; context]), W_o. One call
    from Python per token.

    `supports(decoder)` says whether the decoder's layers are the int8 ones it runs (a GRU
    decoder converted by `quantize=int8`, with the C++ extension built).
    """

    def __init__(self, decoder: nn.Module) -> None:
        if not self.supports(decoder):
            raise ValueError("Int8DecoderStep needs a GRU decoder converted by quantize=int8")
        self.decoder = decoder
        self._kernel: Any = None  # torch.classes.dialoglab_gru.Int8DecoderStep, built on first use

    @staticmethod
    def supports(decoder: nn.Module) -> bool:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        rnn, attention = decoder.rnn, decoder.attention
        linears = [decoder.W_c, decoder.W_o, *_attention_layers(attention)]
        return (
            isinstance(rnn, Int8GRU)
            and not rnn.bidirectional
            and all(type(layer) is DynamicLinear and _is_qint8(layer) for layer in linears)
            and compiled_loops()
        )

    def __call__(
        self, tokens: torch.Tensor, state: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, 1), state (L, B, H), encoder outputs (B, S, H), mask (B, S) -> logits
        (B, 1, V), new state (L, B, H), attention weights (B, 1, S)."""
        if self._kernel is None:
            self._kernel = self._build()
        return self._kernel.step(tokens, state.float(), keys.float(), mask)

    def _build(self) -> Any:
        d = self.decoder
        layers = range(d.rnn.num_layers)
        return torch.classes.dialoglab_gru.Int8DecoderStep(
            d.embedding.weight.detach().float().contiguous(),
            [d.rnn.packed[f"weight_ih_l{k}"] for k in layers],
            [d.rnn.packed[f"weight_hh_l{k}"] for k in layers],
            [_packed(layer) for layer in _attention_layers(d.attention)],
            _packed(d.W_c),
            _packed(d.W_o),
        )

    def __getstate__(self) -> dict[str, Any]:  # copies and pickles rebuild the kernel
        return {"decoder": self.decoder, "_kernel": None}


def _attention_layers(attention: nn.Module) -> list[nn.Module]:
    """A LuongAttention's layers in the kernel's order: [] dot, [W] general, [W_q, W_k, v]."""
    names = {"dot": [], "general": ["W"], "concat": ["W_q", "W_k", "v"]}[attention.method]
    return [getattr(attention, name) for name in names]


def _packed(layer: nn.Module) -> Any:
    """The packed int8 weight (and bias) of a torch.ao dynamic quantized Linear."""
    return layer._packed_params._packed_params


def _is_qint8(layer: nn.Module) -> bool:
    return layer._packed_params.dtype == torch.qint8
