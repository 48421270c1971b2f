"""Dialogue metrics shared by every model family; all are torchmetrics, so they sync across ranks."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.aggregation import SumMetric
from torchmetrics.functional.text.rouge import rouge_score
from torchmetrics.text import SacreBLEUScore
from torchmetrics.utilities import dim_zero_cat


def _ngram_hash(ngram: Sequence[str]) -> int:
    """Stable 63-bit hash of an n-gram (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(" ".join(ngram).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DistinctN(Metric):
    """distinct-n: unique n-grams / all n-grams over every generated reply (Li et al., 2016)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.add_state("ngrams", default=[], dist_reduce_fx="cat")

    def update(self, replies: Sequence[str]) -> None:
        hashes = [
            _ngram_hash(words[i : i + self.n])
            for words in (reply.split() for reply in replies)
            for i in range(len(words) - self.n + 1)
        ]
        self.ngrams.append(torch.tensor(hashes, dtype=torch.int64, device=self.device))

    def compute(self) -> torch.Tensor:
        ngrams = self.ngrams  # a list of tensors, or one tensor once synced across processes
        if isinstance(ngrams, list):
            ngrams = dim_zero_cat(ngrams) if ngrams else torch.zeros(0, dtype=torch.int64)
        if ngrams.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        return torch.unique(ngrams).numel() / torch.tensor(
            float(ngrams.numel()), device=self.device
        )


class LikelihoodMetrics(MetricCollection):
    """Summed NLL, token and word counts: loss, per-token and per-word perplexity over a split."""

    def __init__(self) -> None:
        super().__init__({"nll": SumMetric(), "tokens": SumMetric(), "words": SumMetric()})

    def summary(self) -> dict[str, float]:
        totals = self.compute()
        nll, tokens, words = (float(totals[k]) for k in ("nll", "tokens", "words"))
        loss = nll / max(tokens, 1.0)
        return {
            "loss": loss,
            "ppl": math.exp(min(loss, 50.0)),
            "ppl_word": math.exp(min(nll / max(words, 1.0), 50.0)),
        }


class RougeL(Metric):
    """Mean ROUGE-L F1 over replies, kept as a sum and a count.

    torchmetrics' ROUGEScore keeps one tensor per reply in a list state that it gathers one
    element at a time, so two processes with different numbers of replies run different numbers
    of collectives and hang; two scalar sums sync the same way on every rank.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, replies: Sequence[str], references: Sequence[str]) -> None:
        if not replies:
            return
        scores = rouge_score(list(replies), list(references), rouge_keys="rougeL")
        self.total += float(scores["rougeL_fmeasure"]) * len(replies)
        self.count += len(replies)

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class GenerationMetrics(MetricCollection):
    """Corpus BLEU (sacreBLEU 13a, x100, unsmoothed), ROUGE-L F1 and distinct-1/2 of generated replies."""

    def __init__(self) -> None:
        super().__init__(
            {
                "bleu": SacreBLEUScore(tokenize="13a"),
                "rouge_l": RougeL(),
                "distinct_1": DistinctN(1),
                "distinct_2": DistinctN(2),
            },
            compute_groups=False,
        )

    def add(self, replies: Sequence[str], references: Sequence[str]) -> None:
        self["bleu"].update(list(replies), [[r] for r in references])
        self["rouge_l"].update(list(replies), list(references))
        self["distinct_1"].update(replies)
        self["distinct_2"].update(replies)

    def summary(self) -> dict[str, float]:
        out = {}
        for name, metric in self.items():
            out[name] = float(metric.compute()) * (100.0 if name == "bleu" else 1.0)
        return out
