"""Reply metrics: values from their definitions, and exact after a simulated 2-rank sync."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from dialoglab.metrics import (
    DistinctN,
    GenerationMetrics,
    MeanLength,
    NgramEntropy,
    TopReplyShare,
    UnkRate,
)

REPLIES = [
    "i don't know .",
    "i don't know .",
    "i  don't know .",  # the same reply, spaced differently
    "where are you going tonight ?",
    "<unk> .",
    "you can go !",
    "i am not sure what you mean by <unk>",
]


def entropy_of(items: list[tuple[str, ...]]) -> float:
    counts = Counter(items)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def ngrams(replies: list[str], n: int) -> list[tuple[str, ...]]:
    out = []
    for reply in replies:
        words = reply.split()
        out += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return out


def test_definitions() -> None:
    entropy = NgramEntropy(4)
    entropy.update(REPLIES)
    assert float(entropy.compute()) == pytest.approx(entropy_of(ngrams(REPLIES, 4)), rel=1e-6)

    length = MeanLength()
    length.update(REPLIES)
    expected = sum(len(r.split()) for r in REPLIES) / len(REPLIES)
    assert float(length.compute()) == pytest.approx(expected)

    unk = UnkRate()
    unk.update(REPLIES)
    assert float(unk.compute()) == pytest.approx(2 / 7)

    top = TopReplyShare()
    top.update(REPLIES)
    assert float(top.compute()) == pytest.approx(3 / 7)  # "i don't know ." three times

    distinct = DistinctN(2)
    distinct.update(REPLIES)
    bigrams = ngrams(REPLIES, 2)
    assert float(distinct.compute()) == pytest.approx(len(set(bigrams)) / len(bigrams))


def test_degenerate_replies() -> None:
    """No reply, or replies too short for a 4-gram: 0, never NaN; one reply to all: share 1."""
    for metric in (NgramEntropy(4), MeanLength(), UnkRate(), TopReplyShare(), DistinctN(1)):
        metric.update([])
        assert float(metric.compute()) == 0.0, type(metric).__name__
    short = NgramEntropy(4)
    short.update(["yes .", "no"])
    assert float(short.compute()) == 0.0
    same = TopReplyShare()
    same.update(["ok ."] * 5)
    assert float(same.compute()) == 1.0
    one_ngram = NgramEntropy(4)
    one_ngram.update(["a b c d"] * 3)
    assert float(one_ngram.compute()) == 0.0  # one 4-gram, however often: no uncertainty


def test_unk_counts_a_word_not_a_substring() -> None:
    unk = UnkRate()
    unk.update(["<unk>", "a<unk>b", "hello"])
    assert float(unk.compute()) == pytest.approx(1 / 3)


def synced(make: Callable[[], Metric], shards: list[list[str]]) -> list[float]:
    """compute() on every simulated rank: each rank updates with its shard, then syncs through a
    gather that hands back every rank's state, as torch.distributed's all_gather would."""
    ranks = [make() for _ in shards]
    for metric, shard in zip(ranks, shards, strict=True):
        metric.update(shard)

    def state(metric: Metric, name: str) -> torch.Tensor:
        value = getattr(metric, name)
        return dim_zero_cat(value) if isinstance(value, list) else value

    values = []
    for me in ranks:
        order = iter(list(me._reductions))

        def gather(
            tensor: torch.Tensor, group: object = None, order: Iterator[str] = order
        ) -> list[torch.Tensor]:
            name = next(order)  # states are gathered in the order they were added
            return [state(rank, name) for rank in ranks]

        me.dist_sync_fn = gather
        me.distributed_available_fn = lambda: True
        values.append(float(me.compute()))
    return values


@pytest.mark.parametrize(
    "make",
    [
        lambda: NgramEntropy(4),
        lambda: DistinctN(2),
        MeanLength,
        UnkRate,
        TopReplyShare,
    ],
    ids=["entropy_4", "distinct_2", "mean_length", "unk_rate", "top_reply_share"],
)
@pytest.mark.parametrize(
    "split", [(4, 3), (7, 0), (1, 6)], ids=["uneven", "one-rank-empty", "one-reply"]
)
def test_two_rank_sync_equals_one_process(
    make: Callable[[], Metric], split: tuple[int, int]
) -> None:
    one = make()
    one.update(REPLIES)
    expected = float(one.compute())
    assert expected > 0
    shards = [REPLIES[: split[0]], REPLIES[split[0] :]]
    # the top reply spread over both ranks must still count as one reply
    assert synced(make, shards) == [expected, expected]


def test_generation_metrics_hold_every_reply_metric() -> None:
    metrics = GenerationMetrics()
    metrics.add(REPLIES, REPLIES)
    summary = metrics.summary()
    assert set(summary) == {
        "bleu", "rouge_l", "distinct_1", "distinct_2", "entropy_4", "mean_length", "unk_rate",
        "top_reply_share",
    }  # fmt: skip
    assert summary["bleu"] == pytest.approx(100.0)
    assert summary["top_reply_share"] == pytest.approx(3 / 7)
    assert summary["unk_rate"] == pytest.approx(2 / 7)
