"""Faster versions of gru_attn's encoder and decoder for training: subclasses that keep every
parameter.

Each overrides one method of the reference classes in `models/components/gru_attn.py` and
falls back to it wherever it does not apply (another device, dtype or layer type), so swapping
one in (`dialoglab.accel.swap`) changes speed, never the state_dict or the results beyond
float rounding.

`FusedGRUEncoder` / `FusedGRUDecoder` run CPU GRU layers through `fused_gru`; in bf16 the
decoder's output layer takes a bucketed row count (`row_buckets`).
"""

from __future__ import annotations

import torch

from dialoglab.accel.fused_gru import fused_gru, supports_fused
from dialoglab.accel.row_buckets import padded, wanted
from dialoglab.models.components.gru_attn import Decoder, Encoder, State


class FusedGRUEncoder(Encoder):
    """`Encoder` whose CPU GRU runs as one autograd node per layer and direction."""

    def run_rnn(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        if supports_fused(self.rnn, x):
            return fused_gru(self.rnn, x, lengths=lengths)  # (B, S, 2H), (2L, B, H)
        return super().run_rnn(x, lengths)


class FusedGRUDecoder(Decoder):
    """`Decoder` whose CPU GRU runs through `fused_gru` for multi-token (teacher-forced) calls,
    skipping each row's padding steps when `lengths` says where they start; in bf16 its output
    layer takes a bucketed row count (`row_buckets`)."""

    def run_rnn(
        self, x: torch.Tensor, state: State, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        if x.size(1) > 1 and supports_fused(self.rnn, x):
            return fused_gru(self.rnn, x, state, lengths)  # (B, T, H), (L, B, H)
        return super().run_rnn(x, state, lengths)

    def nll(
        self, features: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        if wanted(features):  # extra zero rows, their targets ignored (-100)
            features, targets = padded(features), padded(targets, -100)
        return super().nll(features, targets, label_smoothing)  # (N', H), (N',)
