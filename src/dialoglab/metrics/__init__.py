"""Dialogue metrics shared by every model family; all are torchmetrics, so they sync across ranks.

Every state is a sum or a concatenation (`dist_reduce_fx="sum"` / `"cat"`), never a mean of
per-rank results, so a data-parallel run computes exactly what one process would.
"""

from dialoglab.metrics.diversity import (
    DistinctN,
    MeanLength,
    NgramEntropy,
    TopReplyShare,
    UnkRate,
    ngram_hash,
)
from dialoglab.metrics.generation import GenerationMetrics, RougeL
from dialoglab.metrics.likelihood import LikelihoodMetrics

__all__ = [
    "DistinctN",
    "GenerationMetrics",
    "LikelihoodMetrics",
    "MeanLength",
    "NgramEntropy",
    "RougeL",
    "TopReplyShare",
    "UnkRate",
    "ngram_hash",
]
