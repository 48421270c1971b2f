"""Faster versions of gru_attn's encoder and decoder: subclasses that keep every parameter.

Each overrides one method of the reference classes in `models/components/gru_attn.py` and
falls back to it wherever it does not apply (another device, dtype or layer type), so swapping
one in (`dialoglab.accel.swap`) changes speed, never the state_dict or the results beyond
float rounding.

- `FusedGRUEncoder` / `FusedGRUDecoder`: CPU GRU layers through `fused_gru` (training).
- `Int8GRUEncoder` / `Int8StepDecoder`: after `quantize=int8`, the GRUs as `Int8GRU` and each
  one-token decoder step as one C++ call (`Int8DecoderStep`) (inference).
"""

from __future__ import annotations

import torch
from torch import nn

from dialoglab.accel.fused_gru import fused_gru, supports_fused
from dialoglab.accel.int8_gru import Int8DecoderStep, Int8GRU
from dialoglab.accel.swap import swap
from dialoglab.models.components.gru_attn import Decoder, Encoder, State


class FusedGRUEncoder(Encoder):
    """`Encoder` whose CPU GRU runs as one autograd node per layer and direction."""

    def run_rnn(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        if supports_fused(self.rnn, x):
            return fused_gru(self.rnn, x, lengths=lengths)  # (B, S, 2H), (2L, B, H)
        return super().run_rnn(x, lengths)


class FusedGRUDecoder(Decoder):
    """`Decoder` whose CPU GRU runs through `fused_gru` for multi-token (teacher-forced) calls,
    skipping each row's padding steps when `lengths` says where they start."""

    def run_rnn(
        self, x: torch.Tensor, state: State, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        if x.size(1) > 1 and supports_fused(self.rnn, x):
            return fused_gru(self.rnn, x, state, lengths)  # (B, T, H), (L, B, H)
        return super().run_rnn(x, state, lengths)


class Int8GRUEncoder(Encoder):
    """`Encoder` over an `Int8GRU`, which takes the lengths itself (no packing)."""

    def run_rnn(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        if isinstance(self.rnn, Int8GRU):
            return self.rnn(x, lengths=lengths)
        return super().run_rnn(x, lengths)


class Int8StepDecoder(Decoder):
    """`Decoder` whose one-token inference steps are one C++ call over its int8 layers."""

    int8_step: Int8DecoderStep | None = None  # set by `attach`

    @classmethod
    def attach(cls, decoder: Decoder) -> bool:
        """Swap `decoder` to this class when its layers are int8 ones the kernel runs."""
        if not Int8DecoderStep.supports(decoder):
            return False
        swap(decoder, cls)
        decoder.int8_step = Int8DecoderStep(decoder)
        return True

    def forward(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        if self.int8_step is not None and tokens.size(1) == 1 and not self.training:
            return self.int8_step(tokens, state, encoder_outputs, src_mask)  # (B, 1, V), ...
        return super().forward(tokens, state, encoder_outputs, src_mask)


def use_int8_kernels(net: nn.Module) -> nn.Module:
    """In a network converted by `quantize=int8`: its torch.ao GRUs as `Int8GRU`, and gru_attn's
    encoder and decoder swapped for the classes that run them (`accel.gru_attn`), in place."""
    from torch.ao.nn.quantized.dynamic import GRU as DynamicGRU

    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, DynamicGRU) and Int8GRU.supports(child):
                setattr(module, name, Int8GRU.from_quantized(child))
    for module in net.modules():
        if isinstance(module, Encoder) and isinstance(module.rnn, Int8GRU):
            swap(module, Int8GRUEncoder)
        elif isinstance(module, Decoder):
            Int8StepDecoder.attach(module)
    return net
