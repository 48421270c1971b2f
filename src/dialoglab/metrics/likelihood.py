"""Loss and perplexities of a split from summed negative log-likelihood and counts."""

from __future__ import annotations

import math

from torchmetrics import MetricCollection
from torchmetrics.aggregation import SumMetric


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
