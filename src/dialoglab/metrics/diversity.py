"""How varied and how readable generated replies are, without references.

Replies are split on whitespace (as decoded: "i don't know ."). n-grams and whole replies are
kept as stable 63-bit hashes in `cat` states, so counting over all ranks' replies after a sync is
exact; the other metrics keep integer sums.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def ngram_hash(ngram: Sequence[str]) -> int:
    """Stable 63-bit hash of an n-gram (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(" ".join(ngram).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _counter(metric: Metric) -> None:
    """An int64 scalar `total` and `count`, summed across ranks."""
    for name in ("total", "count"):
        metric.add_state(name, default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")


class _HashedItems(Metric):
    """Keeps one int64 hash per item (an n-gram, a reply) in a `cat` state.

    `update` always appends a tensor, even an empty one, so every rank holds the state before
    a sync (a rank with nothing would otherwise hold an empty list).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("hashes", default=[], dist_reduce_fx="cat")

    def add_hashes(self, hashes: list[int]) -> None:
        self.hashes.append(torch.tensor(hashes, dtype=torch.int64, device=self.device))

    def all_hashes(self) -> torch.Tensor:
        hashes = self.hashes  # a list of tensors, or one tensor once synced across processes
        if isinstance(hashes, list):
            return dim_zero_cat(hashes) if hashes else torch.zeros(0, dtype=torch.int64)
        return hashes

    def counts(self) -> torch.Tensor:
        """How often each distinct item occurs."""
        hashes = self.all_hashes()
        if hashes.numel() == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        return torch.unique(hashes, return_counts=True)[1]


def _ngrams(replies: Sequence[str], n: int) -> list[int]:
    return [
        ngram_hash(words[i : i + n])
        for words in (reply.split() for reply in replies)
        for i in range(len(words) - n + 1)
    ]


class DistinctN(_HashedItems):
    """distinct-n: unique n-grams / all n-grams over every generated reply (Li et al., 2016)."""

    higher_is_better = True

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n = n

    def update(self, replies: Sequence[str]) -> None:
        self.add_hashes(_ngrams(replies, self.n))

    def compute(self) -> torch.Tensor:
        counts = self.counts()
        if counts.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        return torch.tensor(counts.numel() / float(counts.sum()), device=self.device)


class NgramEntropy(_HashedItems):
    """Entropy in nats of the distribution of n-grams over every reply (entropy_4 for n=4, as
    in Zhang et al., 2018): higher when replies use many n-grams evenly; 0 without any."""

    higher_is_better = True

    def __init__(self, n: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n = n

    def update(self, replies: Sequence[str]) -> None:
        self.add_hashes(_ngrams(replies, self.n))

    def compute(self) -> torch.Tensor:
        counts = self.counts().double()
        if counts.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        p = counts / counts.sum()
        return (-(p * p.log()).sum() + 0.0).float()  # + 0.0: one n-gram gives 0, not -0


class TopReplyShare(_HashedItems):
    """Share of replies that are the most frequent reply (whitespace-normalised): 1.0 when the
    model says the same thing to everything."""

    higher_is_better = False

    def update(self, replies: Sequence[str]) -> None:
        self.add_hashes([ngram_hash(reply.split()) for reply in replies])

    def compute(self) -> torch.Tensor:
        counts = self.counts()
        if counts.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        return torch.tensor(float(counts.max()) / float(counts.sum()), device=self.device)


class MeanLength(Metric):
    """Mean reply length in words (whitespace-separated tokens of the decoded reply)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        _counter(self)

    def update(self, replies: Sequence[str]) -> None:
        self.total += sum(len(reply.split()) for reply in replies)
        self.count += len(replies)

    def compute(self) -> torch.Tensor:
        return (self.total.double() / self.count.clamp(min=1)).float()


class UnkRate(Metric):
    """Share of replies holding the unknown-word token (`<unk>` as a word of the reply)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, unk_token: str = "<unk>", **kwargs) -> None:
        super().__init__(**kwargs)
        self.unk_token = unk_token
        _counter(self)

    def update(self, replies: Sequence[str]) -> None:
        self.total += sum(self.unk_token in reply.split() for reply in replies)
        self.count += len(replies)

    def compute(self) -> torch.Tensor:
        return (self.total.double() / self.count.clamp(min=1)).float()
