"""Array helpers for ragged sequences stored flat with offsets (the layout of `EncodedPairs`).

Sequence k of such a store is flat[offsets[k] : offsets[k + 1]]. These helpers gather, interleave
and pad many sequences with a fixed number of numpy / torch operations instead of a Python loop
per sequence, which is what lets the word tokenizer encode and batch a whole corpus at once.
"""

from __future__ import annotations

import numpy as np
import torch


def gather_runs(
    flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate flat[s : s + n] for each (s, n): the values and their offsets (len n + 1)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.repeat(starts - offsets[:-1], lengths)
    positions += np.arange(len(positions))
    return flat[positions], offsets


def interleave(rows: np.ndarray, counts: np.ndarray, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """Each group's `counts[i]` consecutive `rows` with `sep` between them, and the groups'
    offsets in the result: [r0, sep, r1, sep, r2], [], [r3], ..."""
    sizes = np.maximum(2 * counts - 1, 0)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.full(offsets[-1], sep, dtype=np.int64)
    firsts = np.cumsum(counts) - counts  # index in `rows` of each group's first row
    rank = np.arange(len(rows)) - np.repeat(firsts, counts)  # position within its group
    out[np.repeat(offsets[:-1], counts) + 2 * rank] = rows
    return out, offsets


def gather_padded(
    flat: torch.Tensor, offsets: torch.Tensor, index: torch.Tensor, extra: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of a flat+offsets store as a (B, longest + extra) long tensor padded with
    pad_id, and their lengths (B,)."""
    starts = offsets[index]
    lengths = offsets[index + 1] - starts
    width = (int(lengths.max()) if len(index) else 0) + extra
    positions = torch.arange(width)
    real = positions < lengths.unsqueeze(1)  # (B, width)
    if flat.numel() == 0:
        return torch.full(real.shape, pad_id, dtype=torch.long), lengths
    gather = (starts.unsqueeze(1) + positions).clamp_(max=flat.numel() - 1)
    return torch.where(real, flat[gather].long(), pad_id), lengths
