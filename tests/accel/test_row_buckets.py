"""accel/row_buckets.py: bf16 products over packed tokens take a bucketed row count, and the
loss and gradients are those of the unbucketed products."""

from __future__ import annotations

import copy

import pytest
import torch

from dialoglab import accel
from dialoglab.accel import row_buckets
from tests.accel.test_fused_gru import (
    loops,  # noqa: F401 (the fixture: Python and C++ loops)
    make_net,
    make_seq2seq_batch,
    nll,
)


def test_padded_appends_rows_up_to_a_multiple() -> None:
    t = torch.ones(5, 3)
    out = row_buckets.padded(t)
    assert out.shape == (row_buckets.ROWS, 3)
    assert torch.equal(out[:5], t) and not out[5:].any()
    assert row_buckets.padded(torch.ones(row_buckets.ROWS, 2)).shape == (row_buckets.ROWS, 2)
    targets = row_buckets.padded(torch.tensor([1, 2]), -100)
    assert targets.tolist() == [1, 2] + [-100] * (row_buckets.ROWS - 2)


def test_wanted_only_for_bf16_products_on_the_cpu() -> None:
    assert not row_buckets.wanted(torch.ones(2))
    assert row_buckets.wanted(torch.ones(2, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert row_buckets.wanted(torch.ones(2))
    rows = torch.ones(3, 2)
    assert row_buckets.for_products_in(rows, torch.float32) is rows
    assert row_buckets.for_products_in(rows, torch.bfloat16).shape == (row_buckets.ROWS, 2)


def _loss_and_grads(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nll(net, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.usefixtures("loops")
def test_bucketed_rows_give_the_unbucketed_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bf16 autocast, the fused path: extra zero rows (and ignored targets) change nothing."""
    fast = accel.for_training(make_net())
    batch = make_seq2seq_batch()
    bucketed = _loss_and_grads(copy.deepcopy(fast), batch)
    monkeypatch.setattr(row_buckets, "ROWS", 1)  # every row count is its own bucket
    plain = _loss_and_grads(copy.deepcopy(fast), batch)
    torch.testing.assert_close(bucketed[0], plain[0], rtol=1e-3, atol=1e-3)
    for a, b in zip(bucketed[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
