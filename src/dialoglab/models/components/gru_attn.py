"""GRU/LSTM encoder-decoder with Luong attention, in plain PyTorch, read top to bottom.

A shared embedding table feeds a bidirectional GRU (or LSTM) encoder whose two directions are
summed, so encoder outputs and states are H wide. The decoder is a unidirectional GRU (or LSTM)
started from the encoder's top layers' final states; each decoder output attends over the
encoder outputs (Luong dot / general / concat), then `tanh(W_c [rnn_out; context])` is
projected to vocabulary logits by `W_o`. There is no input feeding, so a teacher-forced pass
over the whole target is a single decoder call and equals the step-by-step loop.

Faster versions of `Encoder.run_rnn`, `Decoder.run_rnn` and `Decoder.nll` live in
`dialoglab.accel`, which swaps them in without changing any parameter.

Shapes: B batch, S source length, T target length, H hidden size, V vocabulary size,
L number of RNN layers, N real (non-pad) target tokens. Everything is batch_first.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeAlias

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab.errors import CheckpointError
from dialoglab.models.components.gru_attn_config import (
    ATTENTION_METHODS,
    GRUAttnConfig,
    ModelConfigError,
)

# A GRU state is h (L, B, H); an LSTM state is the pair (h, c), both (L, B, H).
State: TypeAlias = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _make_rnn(config: GRUAttnConfig, n_layers: int, bidirectional: bool) -> nn.GRU | nn.LSTM:
    """A batch_first H -> H GRU or LSTM; dropout between layers only when there are several."""
    rnn_class = nn.GRU if config.rnn_type == "gru" else nn.LSTM
    return rnn_class(
        input_size=config.hidden_size,
        hidden_size=config.hidden_size,
        num_layers=n_layers,
        dropout=config.dropout if n_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


# -----------------------------------------------------------------------------
# Encoder


class Encoder(nn.Module):
    """Bidirectional GRU/LSTM that skips padding; the two directions are summed."""

    def __init__(self, config: GRUAttnConfig, embedding: nn.Embedding):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.n_layers = config.encoder_n_layers
        self.embedding = embedding  # shared with the decoder (the same module, the same weight)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = _make_rnn(config, config.encoder_n_layers, bidirectional=True)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Encode (B, S) ids with (B,) lengths >= 1 -> outputs (B, S, H), state (L, B, H)."""
        B, _ = src.shape
        H, L = self.hidden_size, self.n_layers
        x = self.dropout(self.embedding(src))  # (B, S, H)
        outputs, state = self.run_rnn(x, src_lengths)  # (B, S, 2H), 0 on padding
        outputs = outputs[..., :H] + outputs[..., H:]  # (B, S, H)

        def sum_directions(h: torch.Tensor) -> torch.Tensor:
            # PyTorch orders h as (layer0 fwd, layer0 bwd, layer1 fwd, ...): (2L, B, H).
            return h.view(L, 2, B, H).sum(dim=1)  # (L, B, H)

        if isinstance(state, tuple):  # LSTM: (h, c)
            return outputs, (sum_directions(state[0]), sum_directions(state[1]))
        return outputs, sum_directions(state)

    def run_rnn(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """The RNN over (B, S, H) inputs, skipping padding by packing -> (B, S, 2H), (2L, B, H).
        Packing wants the lengths on the CPU (one host sync per batch)."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, state = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=x.size(1))
        return outputs, state


def bridge_state(encoder_state: State, decoder_n_layers: int) -> State:
    """Decoder initial state, layer by layer from the encoder's (L_enc, B, H) final state.

    With decoder_n_layers <= L_enc the decoder takes the top decoder_n_layers encoder layers;
    with more, the extra bottom decoder layers start at zeros (the top ones line up).
    """
    if isinstance(encoder_state, tuple):  # LSTM: bridge h and c the same way
        h, c = encoder_state
        return bridge_state(h, decoder_n_layers), bridge_state(c, decoder_n_layers)
    n_encoder_layers = encoder_state.size(0)
    if decoder_n_layers <= n_encoder_layers:
        return encoder_state[n_encoder_layers - decoder_n_layers :]  # (L_dec, B, H)
    missing = decoder_n_layers - n_encoder_layers
    zeros = encoder_state.new_zeros(missing, *encoder_state.shape[1:])
    return torch.cat([zeros, encoder_state], dim=0)  # (L_dec, B, H)


# -----------------------------------------------------------------------------
# Attention


class LuongAttention(nn.Module):
    """Luong global attention: score(q, k) is dot q·k, general q·W k, or concat v·tanh(W[q;k])."""

    def __init__(self, method: str, hidden_size: int):
        super().__init__()
        if method not in ATTENTION_METHODS:
            raise ModelConfigError(
                f"model.net.attention must be one of {', '.join(ATTENTION_METHODS)}, got {method!r}"
            )
        self.method = method
        if method == "general":
            self.W = nn.Linear(hidden_size, hidden_size, bias=False)
        elif method == "concat":
            # W [q; k] + b split as W_q q + (W_k k + b): each side projected once, not per pair.
            self.W_q = nn.Linear(hidden_size, hidden_size, bias=False)
            self.W_k = nn.Linear(hidden_size, hidden_size)
            self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend (B, T, H) queries over (B, S, H) keys; mask (B, S) is True on real tokens."""
        if self.method == "dot":
            scores = query @ keys.transpose(1, 2)  # (B, T, S)
        elif self.method == "general":
            scores = query @ self.W(keys).transpose(1, 2)  # (B, T, S)
        else:  # concat
            q = self.W_q(query).unsqueeze(2)  # (B, T, 1, H)
            k = self.W_k(keys).unsqueeze(1)  # (B, 1, S, H)
            scores = self.v(torch.tanh(q + k)).squeeze(-1)  # (B, T, S)
        # The most negative finite value rather than -inf: exp() of it is exactly 0 on padding,
        # and a row with no real token gets uniform weights, not NaN.
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1)  # (B, T, S), rows sum to 1
        context = weights @ keys  # (B, T, S) @ (B, S, H) -> (B, T, H)
        return context, weights


# -----------------------------------------------------------------------------
# Decoder


class Decoder(nn.Module):
    """Unidirectional GRU/LSTM, attention with its output as query, tanh(W_c[.;.]), W_o."""

    def __init__(self, config: GRUAttnConfig, embedding: nn.Embedding):
        super().__init__()
        H, V = config.hidden_size, config.vocab_size
        self.embedding = embedding  # shared with the encoder
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = _make_rnn(config, config.decoder_n_layers, bidirectional=False)
        self.attention = LuongAttention(config.attention, H)
        self.W_c = nn.Linear(2 * H, H)
        self.W_o = nn.Linear(H, V)

    def forward(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Decode (B, T) ids -> logits (B, T, V), new state, attention weights (B, T, S)."""
        features, state, weights = self.features(tokens, state, encoder_outputs, src_mask)
        return self.W_o(features), state, weights

    def features(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """`forward` up to W_o's input: tanh(W_c [rnn_out; context]) (B, T, H), the new state and
        the attention weights (B, T, S). `lengths` (B,): the real steps of each row (the rest is
        padding whose outputs are not read; `run_rnn` may skip it)."""
        x = self.dropout(self.embedding(tokens))  # (B, T, H)
        rnn_out, state = self.run_rnn(x, state, lengths)  # (B, T, H)
        context, weights = self.attention(rnn_out, encoder_outputs, src_mask)  # (B, T, H)
        combined = torch.cat([rnn_out, context], dim=-1)  # (B, T, 2H)
        return torch.tanh(self.W_c(combined)), state, weights

    def run_rnn(
        self, x: torch.Tensor, state: State, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """The RNN over (B, T, H) inputs from `state` -> (B, T, H), new state. Every step is
        computed here (`lengths` is a hint for faster versions)."""
        return self.rnn(x, state)

    def nll(
        self, features: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Summed cross-entropy of W_o's logits on (N, H) feature rows against (N,) targets."""
        logits = self.W_o(features)  # (N, V)
        return F.cross_entropy(
            logits.float(), targets, reduction="sum", label_smoothing=label_smoothing
        )


# -----------------------------------------------------------------------------
# The whole model


class GRUAttnSeq2Seq(nn.Module):
    """Encoder-decoder chatbot network: teacher-forced logits and loss, one-token decoder steps.

    Built from a `GRUAttnConfig` or from its fields as keywords (as Hydra's `model.net` does).
    """

    def __init__(self, config: GRUAttnConfig | None = None, **settings: Any):
        super().__init__()
        self.config = config if config is not None else GRUAttnConfig.from_dict(settings)
        config = self.config
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_id)
        # One embedding module seen by both halves: state_dict() lists its weight under
        # embedding., encoder.embedding. and decoder.embedding.; parameters() yields it once.
        self.encoder = Encoder(config, self.embedding)
        self.decoder = Decoder(config, self.embedding)

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Run the encoder -> outputs (B, S, H), decoder initial state, src_mask (B, S)."""
        encoder_outputs, encoder_state = self.encoder(src, src_lengths)
        decoder_state = bridge_state(encoder_state, self.config.decoder_n_layers)
        positions = torch.arange(src.size(1), device=src.device)  # (S,)
        src_mask = positions.unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)  # (B, S)
        return encoder_outputs, decoder_state, src_mask

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, decoder_input: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for decoder_input (B, T) = [sos, y_1, ..., y_{T-1}]."""
        encoder_outputs, state, src_mask = self.encode(src, src_lengths)
        logits, _, _ = self.decoder(decoder_input, state, encoder_outputs, src_mask)
        return logits

    def nll(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        target: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Summed teacher-forced cross-entropy of the (B, T) target's non-pad tokens; the output
        layer runs on those N tokens only, not on padding."""
        keep = target != self.config.pad_id  # (B, T)
        encoder_outputs, state, src_mask = self.encode(src, src_lengths)
        features, _, _ = self.decoder.features(
            decoder_input, state, encoder_outputs, src_mask, lengths=keep.sum(dim=1)
        )  # (B, T, H)
        return self.decoder.nll(features[keep], target[keep], label_smoothing)  # (N, H), (N,)

    def num_parameters(self) -> int:
        """Number of trainable values (the shared embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors (shared embedding stored once) to directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(dataclasses.asdict(self.config), indent=2, sort_keys=True)
        (directory / CONFIG_FILE).write_text(config_text + "\n", encoding="utf-8")
        save_model(self, str(directory / WEIGHTS_FILE))  # drops the aliased embedding names
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> GRUAttnSeq2Seq:
        """Load a model written by save_pretrained, on map_location."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(
                    f"{path}: not found; expected a directory written by "
                    "GRUAttnSeq2Seq.save_pretrained (config.json + model.safetensors)"
                )
        try:
            values = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{config_path}: not valid JSON ({error})") from error
        model = cls(GRUAttnConfig.from_dict(values))
        try:
            load_model(model, str(weights_path), strict=True)
        except (RuntimeError, OSError) as error:
            raise CheckpointError(
                f"{weights_path}: does not match {config_path} ({error})"
            ) from error
        return model.to(map_location)
