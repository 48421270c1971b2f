"""GRU/LSTM encoder-decoder with Luong attention, as a plain nn.Module read top to bottom.

The model, in one paragraph: a shared embedding table feeds a bidirectional GRU (or LSTM)
encoder whose two directions are summed, so encoder outputs and states are H wide. The
decoder is a unidirectional GRU (or LSTM) started from the encoder's top layers' final
states; each decoder output attends over the encoder outputs (Luong dot / general / concat),
then `tanh(W_c [rnn_out; context])` is projected to vocabulary logits. There is no input
feeding (the previous context is not fed back), so a teacher-forced pass over the whole
target is a single decoder call and is exactly equal to the step-by-step loop.

Shapes: B batch, S source length, T target length, H hidden size, V vocabulary size,
L number of RNN layers. Everything is batch_first.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.models.components import row_buckets
from dialoglab.models.components.column_major_linear import ColumnMajorLinear
from dialoglab.models.components.dropout import Dropout
from dialoglab.models.components.fused_gru import fused_gru, supports_fused
from dialoglab.models.components.int8_gru import Int8GRU
from dialoglab.models.components.linear_cross_entropy import kept_rows, linear_cross_entropy
from dialoglab.models.components.onednn import linear

# A GRU state is h (L, B, H); an LSTM state is the pair (h, c), both (L, B, H).
State: TypeAlias = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

ATTENTION_METHODS = ("dot", "general", "concat")
RNN_TYPES = ("gru", "lstm")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class ModelConfigError(ConfigError, ValueError):
    """An invalid model setting; a ValueError and a dialoglab ConfigError at once."""


# -----------------------------------------------------------------------------
# Config


@dataclass
class GRUAttnConfig:
    """Hyperparameters of GRUAttnSeq2Seq; plain types only, so it round-trips through JSON."""

    vocab_size: int
    pad_id: int = 0
    sos_id: int = 1
    eos_id: int = 2
    hidden_size: int = 500
    encoder_n_layers: int = 2
    decoder_n_layers: int = 2
    dropout: float = 0.1
    attention: str = "dot"  # dot | general | concat  (Luong et al., 2015)
    rnn_type: str = "gru"  # gru | lstm

    def __post_init__(self) -> None:
        """Check every field; errors name the key as `model.<field>` and what is accepted."""
        for key in ("vocab_size", "hidden_size", "encoder_n_layers", "decoder_n_layers"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ModelConfigError(f"model.{key} must be an integer >= 1, got {value!r}")
        for key in ("pad_id", "sos_id", "eos_id"):
            value = getattr(self, key)
            if not _is_int(value) or not 0 <= value < self.vocab_size:
                raise ModelConfigError(
                    f"model.{key} must be an integer in [0, vocab_size={self.vocab_size}), "
                    f"got {value!r}"
                )
        if len({self.pad_id, self.sos_id, self.eos_id}) != 3:
            raise ModelConfigError(
                "model.pad_id, model.sos_id and model.eos_id must be three different ids, got "
                f"{self.pad_id}, {self.sos_id}, {self.eos_id}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ModelConfigError(
                f"model.dropout must be a number in [0, 1), got {self.dropout!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in ATTENTION_METHODS:
            raise ModelConfigError(
                f"model.attention must be one of {', '.join(ATTENTION_METHODS)}, "
                f"got {self.attention!r}"
            )
        if self.rnn_type not in RNN_TYPES:
            raise ModelConfigError(
                f"model.rnn_type must be one of {', '.join(RNN_TYPES)}, got {self.rnn_type!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a dict of plain Python values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GRUAttnConfig:
        """Build a config from a dict; unknown keys are an error, not silently dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown model setting(s) {', '.join('model.' + k for k in unknown)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        if "vocab_size" not in values:
            raise ModelConfigError("model.vocab_size is required")
        return cls(**values)


def _is_int(value: Any) -> bool:
    """True for ints but not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


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
    """Bidirectional GRU/LSTM over packed sequences; the two directions are summed."""

    def __init__(self, config: GRUAttnConfig, embedding: nn.Embedding):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.n_layers = config.encoder_n_layers
        self.embedding = embedding  # shared with the decoder (the same module, the same weight)
        self.dropout = Dropout(config.dropout)  # nn.Dropout with a cheaper CPU mask
        self.rnn = _make_rnn(config, config.encoder_n_layers, bidirectional=True)
        self.fused = True  # CPU GRU through fused_gru (see models/components/fused_gru.py)

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, embedded: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Encode (B, S) ids with (B,) lengths >= 1 -> outputs (B, S, H), state (L, B, H).
        `embedded` (B, S, H): src already embedded and dropped out (see GRUAttnSeq2Seq.forward)."""
        B, S = src.shape
        H, L = self.hidden_size, self.n_layers
        x = self.dropout(self.embedding(src)) if embedded is None else embedded  # (B, S, H)
        if isinstance(self.rnn, Int8GRU):  # quantize=int8 inference: skips padding too
            outputs, state = self.rnn(x, lengths=src_lengths)  # (B, S, 2H)
        elif self.fused and supports_fused(self.rnn, x):
            # The same results as packing, from one autograd node per layer and direction.
            outputs, state = fused_gru(self.rnn, x, lengths=src_lengths)  # (B, S, 2H)
        else:
            # Packing makes the RNN skip padding, so results do not depend on how much there is.
            # The lengths must live on the CPU (one host sync per batch, unavoidable here).
            packed = pack_padded_sequence(
                x, src_lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            packed_outputs, state = self.rnn(packed)
            outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=S)
        outputs = outputs[..., :H] + outputs[..., H:]  # (B, S, 2H) -> (B, S, H), padding stays 0

        def sum_directions(h: torch.Tensor) -> torch.Tensor:
            # PyTorch orders h as (layer0 fwd, layer0 bwd, layer1 fwd, ...): (2L, B, H).
            return h.view(L, 2, B, H).sum(dim=1)  # (L, B, H)

        if isinstance(state, tuple):  # LSTM: (h, c)
            return outputs, (sum_directions(state[0]), sum_directions(state[1]))
        return outputs, sum_directions(state)


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
        return encoder_state[n_encoder_layers - decoder_n_layers :]  # (L_dec, B, H), contiguous
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
                f"model.attention must be one of {', '.join(ATTENTION_METHODS)}, got {method!r}"
            )
        self.method = method
        if method == "general":
            self.W = nn.Linear(hidden_size, hidden_size, bias=False)
        elif method == "concat":
            # W [q; k] + b is split as W_q q + (W_k k + b): the same function, but each side is
            # projected once instead of once per (query, key) pair.
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
        # The dtype's most negative finite value rather than -inf: exp() of it underflows to
        # exactly 0 on padding, and a row with no real token gives uniform weights, not NaN.
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1)  # (B, T, S), rows sum to 1
        context = weights @ keys  # (B, T, S) @ (B, S, H) -> (B, T, H)
        return context, weights


# -----------------------------------------------------------------------------
# Decoder


def _prefix_lengths(keep: torch.Tensor) -> torch.Tensor | None:
    """(B,) counts of kept positions when `keep` (B, T) keeps a prefix of every row, else None."""
    lengths = keep.sum(dim=1)
    positions = torch.arange(keep.size(1), device=keep.device)
    prefix = positions.unsqueeze(0) < lengths.unsqueeze(1)
    return lengths if torch.equal(prefix, keep) else None


class Decoder(nn.Module):
    """Unidirectional GRU/LSTM, attention with its output as query, tanh(W_c[.;.]), W_o."""

    def __init__(self, config: GRUAttnConfig, embedding: nn.Embedding):
        super().__init__()
        H, V = config.hidden_size, config.vocab_size
        self.embedding = embedding  # shared with the encoder
        self.dropout = Dropout(config.dropout)  # nn.Dropout with a cheaper CPU mask
        self.rnn = _make_rnn(config, config.decoder_n_layers, bidirectional=False)
        self.fused = True  # CPU GRU through fused_gru for multi-step calls (teacher forcing)
        self.attention = LuongAttention(config.attention, H)
        self.W_c = nn.Linear(2 * H, H)
        self.W_o = ColumnMajorLinear(H, V)  # nn.Linear's maths, a faster training layout
        # One-token steps in C++ over int8 layers (an `Int8DecoderStep`, set by quantize=int8).
        self.step_kernel: Callable[..., tuple[torch.Tensor, State, torch.Tensor]] | None = None

    def forward(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
        keep: torch.Tensor | None = None,
        embedded: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Decode (B, T) ids -> logits (B, T, V), new state, attention weights (B, T, S).

        With `keep` (B, T) bool, logits are (N, V) for the N kept positions only (in row-major
        order): training skips the output layers on padding, the costliest part of a step.
        The returned state is then each row's state after its last kept position.
        `embedded` (B, T, H): tokens already embedded and dropped out.
        """
        one_token = tokens.size(1) == 1 and keep is None and embedded is None
        if self.step_kernel is not None and one_token and not self.training:
            return self.step_kernel(tokens, state, encoder_outputs, src_mask)  # int8, in C++
        concat, n, state, weights = self.features(
            tokens, state, encoder_outputs, src_mask, keep, embedded
        )
        logits = linear(concat, self.W_o)[:n]  # (B, T, V) or (N, V)
        return logits, state, weights

    def features(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
        keep: torch.Tensor | None = None,
        embedded: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int, State, torch.Tensor]:
        """`forward` up to W_o's input: tanh(W_c [rnn_out; context]) (B, T, H), or (N', H) with
        `keep` (the N kept positions first, then bucket padding rows), and N, the new state and
        the attention weights (B, T, S)."""
        x = self.dropout(self.embedding(tokens)) if embedded is None else embedded  # (B, T, H)
        if self.fused and tokens.size(1) > 1 and supports_fused(self.rnn, x):
            # Kept positions that are a prefix of each row (a reply before its padding) are the
            # only steps computed; the rest output 0 and are not read.
            lengths = None if keep is None else _prefix_lengths(keep)
            rnn_out, state = fused_gru(self.rnn, x, state, lengths)  # (B, T, H)
        else:
            rnn_out, state = self.rnn(x, state)  # (B, T, H)
        context, weights = self.attention(rnn_out, encoder_outputs, src_mask)  # (B, T, H)
        combined = torch.cat([rnn_out, context], dim=-1)  # (B, T, 2H)
        if keep is not None:
            combined = kept_rows(combined, keep)  # (N, 2H), row-major
        n = combined.size(0)
        # bf16: a few row counts, not one per batch (row_buckets); the extra rows cut off later
        if keep is not None and row_buckets.wanted(combined):
            combined = row_buckets.padded(combined)  # (N', 2H)
        concat = torch.tanh(linear(combined, self.W_c))  # (B, T, H) or (N', H)
        return concat, n, state, weights

    def nll(
        self, concat: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Summed cross-entropy of W_o's logits on `features`' (N', H) rows against the (N,)
        targets, W_o and the loss as one autograd node (models/components/
        linear_cross_entropy.py)."""
        return linear_cross_entropy(concat, self.W_o, targets, label_smoothing)


# -----------------------------------------------------------------------------
# The whole model


class GRUAttnSeq2Seq(nn.Module):
    """Encoder-decoder chatbot model: teacher-forced forward, stepwise loop, greedy decoding."""

    def __init__(self, config: GRUAttnConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_id
        )
        # One embedding module, seen by both halves: in state_dict() its weight appears under
        # embedding., encoder.embedding. and decoder.embedding. (all the same tensor), and
        # parameters() yields it once. save_pretrained stores it once.
        self.encoder = Encoder(config, self.embedding)
        self.decoder = Decoder(config, self.embedding)

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, embedded: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Run the encoder -> outputs (B, S, H), decoder initial state, src_mask (B, S)."""
        encoder_outputs, encoder_state = self.encoder(src, src_lengths, embedded)
        decoder_state = bridge_state(encoder_state, self.config.decoder_n_layers)
        positions = torch.arange(src.size(1), device=src.device)  # (S,)
        src_mask = positions.unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)  # (B, S)
        return encoder_outputs, decoder_state, src_mask

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for decoder_input (B, T) = [sos, y_1, ..., y_{T-1}];
        (N, V) for the positions where `keep` (B, T) is True when it is given."""
        concat, n = self._teacher_forced_features(src, src_lengths, decoder_input, keep)
        return linear(concat, self.decoder.W_o)[:n]

    def nll(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        target: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Summed teacher-forced cross-entropy of the (B, T) target's non-pad tokens (the output
        layer and the loss only there): `summed_nll(forward(..., keep)[...], target[keep])` with
        fewer passes over the logits."""
        keep = target != self.config.pad_id  # (B, T)
        concat, _ = self._teacher_forced_features(src, src_lengths, decoder_input, keep)
        return self.decoder.nll(concat, target[keep], label_smoothing)

    def _teacher_forced_features(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        keep: torch.Tensor | None,
    ) -> tuple[torch.Tensor, int]:
        """W_o's input for the whole target (`Decoder.features`) and its count of real rows."""
        # One lookup (and dropout mask) for source and target: the shared table then gets one
        # dense gradient per step instead of two summed.
        S = src.size(1)
        embedded = self.encoder.dropout(self.embedding(torch.cat([src, decoder_input], dim=1)))
        encoder_outputs, state, src_mask = self.encode(src, src_lengths, embedded[:, :S])
        concat, n, _, _ = self.decoder.features(
            decoder_input, state, encoder_outputs, src_mask, keep, embedded[:, S:]
        )
        return concat, n

    @property
    def fused_rnn(self) -> bool:
        """Whether CPU GRU layers run through fused_gru (same results as nn.GRU, faster)."""
        return self.encoder.fused and self.decoder.fused

    @fused_rnn.setter
    def fused_rnn(self, value: bool) -> None:
        self.encoder.fused = self.decoder.fused = bool(value)

    def forward_stepwise(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoder_input: torch.Tensor,
        teacher_forcing_ratio: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Step-by-step logits (B, T, V) with per-example, per-step teacher forcing.

        Step 0 reads decoder_input[:, 0] (sos). At step t > 0 each example reads the gold
        decoder_input[:, t] with probability teacher_forcing_ratio, else the argmax of its own
        step t-1 logits. With ratio 1.0 (and no dropout) this equals forward().
        """
        B, T = decoder_input.shape
        encoder_outputs, state, src_mask = self.encode(src, src_lengths)
        token = decoder_input[:, :1]  # (B, 1)
        step_logits = []
        for t in range(T):
            if t > 0:
                draw = torch.rand(B, generator=generator, device=decoder_input.device)  # (B,)
                use_gold = draw < teacher_forcing_ratio  # always True at 1.0, never at 0.0
                predicted = step_logits[-1].argmax(dim=-1)  # (B, 1)
                token = torch.where(use_gold.unsqueeze(1), decoder_input[:, t : t + 1], predicted)
            logits, state, _ = self.decoder(token, state, encoder_outputs, src_mask)  # (B, 1, V)
            step_logits.append(logits)
        return torch.cat(step_logits, dim=1)  # (B, T, V)

    @torch.no_grad()
    def greedy_decode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, max_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding -> tokens (B, L) with pad after eos, attention (B, L, S).

        Starts every sequence from sos; a sequence that has produced eos then emits pad (and
        zero attention). L <= max_len is the length of the longest output, eos included.
        Call model.eval() first if dropout should be off.
        """
        B, S = src.shape
        pad_id, eos_id = self.config.pad_id, self.config.eos_id
        encoder_outputs, state, src_mask = self.encode(src, src_lengths)
        token = torch.full((B, 1), self.config.sos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
        step_tokens, step_attention = [], []
        for step in range(max_len):
            logits, state, weights = self.decoder(token, state, encoder_outputs, src_mask)
            next_token = logits[:, -1].argmax(dim=-1)  # (B,)
            next_token = next_token.masked_fill(finished, pad_id)
            step_tokens.append(next_token)
            step_attention.append(weights[:, -1].masked_fill(finished.unsqueeze(1), 0.0))
            finished = finished | (next_token == eos_id)
            token = next_token.unsqueeze(1)  # (B, 1)
            # finished.all() copies a bool to the host and stalls an accelerator until the step
            # is done, so it is checked only every 8 steps; the extra steps emit pad only and
            # are trimmed below with a single sync.
            if (step + 1) % 8 == 0 and bool(finished.all()):
                break
        if not step_tokens:  # max_len <= 0
            return src.new_empty(B, 0), encoder_outputs.new_zeros(B, 0, S)
        tokens = torch.stack(step_tokens, dim=1)  # (B, L)
        attention = torch.stack(step_attention, dim=1)  # (B, L, S)
        is_eos = tokens == eos_id
        lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, tokens.size(1))
        length = int(lengths.max())
        return tokens[:, :length], attention[:, :length]

    def num_parameters(self) -> int:
        """Number of trainable values (the shared embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors (shared embedding stored once) to directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n"
        (directory / CONFIG_FILE).write_text(config_text, encoding="utf-8")
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


# -----------------------------------------------------------------------------
# Cost model


def count_flops_per_step(config: GRUAttnConfig, batch: int, src_len: int, tgt_len: int) -> int:
    """Analytic FLOPs of one teacher-forced training step (forward + backward = 3 x forward).

    Counts matrix multiplies only, a multiply-add as 2 FLOPs, every sequence at full length
    (packing skips padding, so this is an upper bound for padded batches). Embedding lookups,
    elementwise gate math, softmax and the loss are not counted. Nor are the products with the
    encoder's zero initial state (each layer and direction's first h W_hh^T, and the gradient
    into that state): they are zero and unused, and the fused GRU skips them.
    """
    B, S, T = batch, src_len, tgt_len
    H, V = config.hidden_size, config.vocab_size
    gates = 3 if config.rnn_type == "gru" else 4  # GRU: r, z, n; LSTM: i, f, g, o

    def rnn_step(input_size: int) -> int:
        # One layer, one direction, one time step, one example: W_ih x + W_hh h for all gates.
        return 2 * (gates * H * input_size + gates * H * H)

    encoder = 0
    for layer in range(config.encoder_n_layers):
        input_size = H if layer == 0 else 2 * H  # upper layers read both directions
        encoder += 2 * B * S * rnn_step(input_size)  # x2 directions
    decoder = config.decoder_n_layers * B * T * rnn_step(H)

    attention = 2 * B * T * S * H  # context: weights @ keys
    if config.attention == "concat":
        attention += 2 * B * T * H * H + 2 * B * S * H * H  # W_q q and W_k k
        attention += 2 * B * T * S * H  # scores v · tanh(.) for every (query, key) pair
    else:
        attention += 2 * B * T * S * H  # scores q·k (general: q·(W k))
        if config.attention == "general":
            attention += 2 * B * S * H * H  # W k, once per key

    combine = 2 * B * T * (2 * H) * H  # W_c [rnn_out; context]
    output = 2 * B * T * H * V  # W_o
    forward = encoder + decoder + attention + combine + output
    zero_state = 2 * config.encoder_n_layers * B * 2 * gates * H * H  # first step, all layers/dirs
    return 3 * forward - 2 * zero_state  # its weight gradient is still part of one big matmul
