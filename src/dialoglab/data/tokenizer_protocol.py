"""What every tokenizer provides: the methods the DataModule, the LightningModules and checkpoints
use, whichever model family the tokenizer serves.

A tokenizer owns its family's example layout as well as its vocabulary: `encode_examples` turns
examples into `EncodedPairs` and `collate` pads a batch of them into the tensors that family's
LightningModule reads. `WordTokenizer` (seq2seq) and `HFTokenizer` (causal LM) both satisfy it;
a new family's tokenizer does too when it provides these members. Family-specific members (such
as `sos_id` for seq2seq or `encode_prompt` for the causal LM) stay on the concrete classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs


@runtime_checkable
class Tokenizer(Protocol):
    """A fitted (or loaded) vocabulary plus the example layout of one model family.

    The special ids exist once the tokenizer is fitted or loaded (`fitted` is True).
    """

    kind: str  # names the tokenizer in `config()` and so in cache keys
    fitted: bool  # fitted on a training split, or loaded from a checkpoint or cache

    @property
    def pad_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def __len__(self) -> int: ...

    def fit_examples(self, examples: Sequence[Example]) -> Tokenizer:
        """Build the vocabulary from the training examples; returns self."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, up to the first end-of-sequence id, special tokens skipped."""
        ...

    def encode_examples(
        self, examples: Sequence[Example], max_length: int, length_policy: str
    ) -> EncodedPairs:
        """Source and target ids of each example, filtered or truncated to `max_length`."""
        ...

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """The padded batch of examples `indices` of `split`, as the model family reads it."""
        ...

    def config(self) -> dict[str, Any]:
        """The settings that shape encoded data: part of the processed-data cache key."""
        ...

    def fingerprint(self) -> str:
        """Short hash of the vocabulary: equal when two tokenizers encode alike."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state saved in checkpoints and caches."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> Tokenizer:
        """Restore a saved vocabulary (marks the tokenizer fitted); returns self."""
        ...
