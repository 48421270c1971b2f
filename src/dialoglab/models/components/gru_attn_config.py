"""GRUAttnSeq2Seq's hyperparameters, checked, in one place (as HF keeps `configuration_*.py`
beside `modeling_*.py`): the `model.net` node of conf/model/gru_attn.yaml fills them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dialoglab.errors import ConfigError

ATTENTION_METHODS = ("dot", "general", "concat")
RNN_TYPES = ("gru", "lstm")


class ModelConfigError(ConfigError, ValueError):
    """An invalid model setting; a ValueError and a dialoglab ConfigError at once."""


@dataclass
class GRUAttnConfig:
    """Hyperparameters of GRUAttnSeq2Seq (their one home); plain types, so JSON round-trips."""

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
        """Check every field; errors name the key as `model.net.<field>` and what is accepted."""
        sizes = ("vocab_size", "hidden_size", "encoder_n_layers", "decoder_n_layers")
        for key in sizes:
            _check(self, key, _is_int(getattr(self, key)) and getattr(self, key) >= 1, ">= 1")
        for key in ("pad_id", "sos_id", "eos_id"):
            value, limit = getattr(self, key), f"in [0, vocab_size={self.vocab_size})"
            _check(self, key, _is_int(value) and 0 <= value < self.vocab_size, limit)
        ids = (self.pad_id, self.sos_id, self.eos_id)
        _check(self, "eos_id", len(set(ids)) == 3, "distinct from pad_id and sos_id")
        dropout = self.dropout
        number = isinstance(dropout, int | float) and not isinstance(dropout, bool)
        _check(self, "dropout", number and 0 <= dropout < 1, "a number in [0, 1)")
        _check(
            self, "attention", self.attention in ATTENTION_METHODS, "one of dot, general, concat"
        )
        _check(self, "rnn_type", self.rnn_type in RNN_TYPES, "one of gru, lstm")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GRUAttnConfig:
        """Build a config from a dict; unknown keys are an error, not silently dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown model setting(s) {', '.join('model.net.' + k for k in unknown)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        if "vocab_size" not in values:
            raise ModelConfigError("model.net.vocab_size is required")
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(config: GRUAttnConfig, key: str, ok: bool, accepted: str) -> None:
    if not ok:
        value = getattr(config, key)
        raise ModelConfigError(f"model.net.{key} must be {accepted}, got {value!r}")
