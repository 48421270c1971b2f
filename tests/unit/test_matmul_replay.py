"""bench/matmul_replay.py: a function's matrix products recorded with their layouts, replayed."""

from __future__ import annotations

import pytest
import torch

from dialoglab.bench.matmul_replay import Product, Replay, record, time_groups
from dialoglab.bench.workloads import make_optimizer, our_step, synthetic_batch
from dialoglab.models.components import row_buckets
from dialoglab.models.components.gru_attn import (
    GRUAttnConfig,
    GRUAttnSeq2Seq,
    count_flops_per_step,
)


def test_a_product_is_recorded_with_its_operands_layouts_and_flops():
    a, b = torch.randn(30, 20).t(), torch.randn(30, 7)  # a: (20, 30), column-major
    (product,) = record(lambda: torch.mm(a, b))
    assert product == Product(
        "aten::mm",
        ((20, 30), (30, 7)),
        ((1, 20), (7, 1)),
        (torch.float32, torch.float32),
        (None, None),
    )
    assert product.flops == 2 * 20 * 30 * 7


def test_wrappers_count_once_and_other_ops_not_at_all():
    x, w, bias = torch.randn(4, 5, 6), torch.randn(3, 6), torch.randn(3)
    products = record(lambda: (torch.matmul(x, w.t()), torch.nn.functional.linear(x, w, bias)))
    assert sum(p.flops for p in products) == 2 * (2 * 4 * 5 * 6 * 3)
    assert record(lambda: (x * 2).sum()) == []


def test_linear_pointwise_counts_rows_by_the_weights_outputs():
    product = Product(
        "mkldnn::_linear_pointwise", ((64, 500), (1500, 500), (1500,)), (), (torch.float32,)
    )
    assert product.flops == 2 * 64 * 500 * 1500


def test_replay_runs_the_recorded_products_in_their_layouts():
    a, b, c = torch.randn(9, 4).t(), torch.randn(9, 5), torch.randn(3, 6, 2)
    bias, row = torch.randn(5), torch.randn(1, 9)
    products = record(
        lambda: (
            torch.mm(a, b),
            torch.addmm(bias, a, b),
            torch.bmm(c, c.transpose(1, 2)),
            torch.mm(row.expand(4, 9), b),  # a left operand whose rows overlap (stride 0)
        )
    )
    assert products[-1].strides[0] == (0, 1)
    replay = Replay(products)
    assert record(replay) == products
    assert replay.flops == sum(p.flops for p in products) > 0


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_a_training_steps_products_are_the_counted_flops(attention, monkeypatch):
    """The analytic count of utilisation's FLOPs equals what a full-length step multiplies:
    forward, both gradients of every product, C++ loops and autograd's backward included."""
    # The count is of real tokens: no zero rows appended (20 and 24 tokens are no multiple of
    # row_buckets.ROWS, which rounds fp32 rows where oneDNN runs them)
    monkeypatch.setattr(row_buckets, "ENABLED", False)
    config = GRUAttnConfig(
        vocab_size=40, hidden_size=16, encoder_n_layers=2, decoder_n_layers=2, attention=attention
    )
    torch.manual_seed(0)
    net = GRUAttnSeq2Seq(config).train()
    batch = synthetic_batch(config.vocab_size, batch=4, src_len=5, tgt_len=6)
    optimizer = make_optimizer(net)
    products = record(lambda: our_step(net, optimizer, batch))
    assert sum(p.flops for p in products) == count_flops_per_step(config, 4, 5, 6)


def test_groups_gather_the_products_of_one_layout_slowest_first():
    a, b = torch.randn(9, 4).t(), torch.randn(9, 5)
    big = torch.randn(200, 200)
    replay = Replay(record(lambda: (torch.mm(a, b), torch.mm(a, b), torch.mm(big, big))))
    groups = time_groups(replay, repeats=3)
    assert [(g.label, g.count) for g in groups] == [
        ("mm (200, 200) @ (200, 200)", 1),
        ("mm (4, 9)^T @ (9, 5)", 2),
    ]
    assert all(g.seconds > 0 and g.gflops_per_s > 0 for g in groups)


def test_a_linears_weight_is_labelled_as_the_factor_it_multiplies_by():
    row_major = Product("mkldnn::_linear_pointwise", ((8, 32), (96, 32)), ((32, 1), (32, 1)), ())
    transposed = Product("mkldnn::_linear_pointwise", ((8, 32), (96, 32)), ((32, 1), (1, 96)), ())
    assert row_major.label == "_linear_pointwise (8, 32) @ (32, 96)^T"
    assert transposed.label == "_linear_pointwise (8, 32) @ (32, 96)"


def test_onednn_weight_gradients_are_recorded_and_replayed():
    d_y, x = torch.randn(12, 7), torch.randn(12, 5)
    weight_grad = torch.ops.aten.mkldnn_linear_backward_weights
    products = record(lambda: weight_grad(d_y.to_mkldnn(), x.to_mkldnn(), d_y.new_empty(0), False))
    (product,) = products
    assert product.flops == 2 * 12 * 7 * 5 and product.scalars[3] is False
    assert product.label == "mkldnn_linear_backward_weights (7, 12)^T @ (12, 5)"
    assert record(Replay(products)) == products
