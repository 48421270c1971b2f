"""Reference-based scores (BLEU, ROUGE-L) and the collection of every generated-reply metric."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.text.rouge import rouge_score
from torchmetrics.text import SacreBLEUScore

from dialoglab.metrics.diversity import (
    DistinctN,
    MeanLength,
    NgramEntropy,
    TopReplyShare,
    UnkRate,
)


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


# metrics of the replies alone (the others compare each reply with its reference)
REPLY_ONLY = ("distinct_1", "distinct_2", "entropy_4", "mean_length", "unk_rate", "top_reply_share")


class GenerationMetrics(MetricCollection):
    """Metrics of generated replies over a split.

    bleu: corpus BLEU (sacreBLEU 13a, x100, unsmoothed); rouge_l: mean ROUGE-L F1;
    distinct_1/2: unique / all n-grams; entropy_4: entropy (nats) of the reply 4-gram
    distribution; mean_length: words per reply; unk_rate: share of replies holding `<unk>`;
    top_reply_share: share of the most frequent reply (1.0: the same reply to everything).
    """

    def __init__(self, unk_token: str = "<unk>") -> None:
        super().__init__(
            {
                "bleu": SacreBLEUScore(tokenize="13a"),
                "rouge_l": RougeL(),
                "distinct_1": DistinctN(1),
                "distinct_2": DistinctN(2),
                "entropy_4": NgramEntropy(4),
                "mean_length": MeanLength(),
                "unk_rate": UnkRate(unk_token),
                "top_reply_share": TopReplyShare(),
            },
            compute_groups=False,
        )

    def add(self, replies: Sequence[str], references: Sequence[str]) -> None:
        self["bleu"].update(list(replies), [[r] for r in references])
        self["rouge_l"].update(list(replies), list(references))
        for name in REPLY_ONLY:
            self[name].update(replies)

    def summary(self) -> dict[str, float]:
        out = {}
        for name, metric in self.items():
            out[name] = float(metric.compute()) * (100.0 if name == "bleu" else 1.0)
        return out
