"""Token ids of one split stored as flat tensors + offsets: compact, fast to cache and to batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def pack(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (flat int32 ids, int64 offsets of length n+1)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = torch.tensor([i for s in sequences for i in s], dtype=torch.int32)
    return flat, offsets


@dataclass
class EncodedPairs:
    """Source and target id sequences of a split (without sos/eos), plus reference word counts."""

    src: torch.Tensor
    src_offsets: torch.Tensor
    tgt: torch.Tensor
    tgt_offsets: torch.Tensor
    n_words: torch.Tensor

    @classmethod
    def from_lists(
        cls,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        n_words: Sequence[int],
    ) -> EncodedPairs:
        src, src_offsets = pack(sources)
        tgt, tgt_offsets = pack(targets)
        return cls(src, src_offsets, tgt, tgt_offsets, torch.tensor(n_words, dtype=torch.int32))

    def __len__(self) -> int:
        return len(self.n_words)

    def source(self, i: int) -> torch.Tensor:
        return self.src[self.src_offsets[i] : self.src_offsets[i + 1]]

    def target(self, i: int) -> torch.Tensor:
        return self.tgt[self.tgt_offsets[i] : self.tgt_offsets[i + 1]]

    def source_lengths(self) -> torch.Tensor:
        return self.src_offsets[1:] - self.src_offsets[:-1]

    def target_lengths(self) -> torch.Tensor:
        return self.tgt_offsets[1:] - self.tgt_offsets[:-1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> EncodedPairs:
        return cls(**state)
