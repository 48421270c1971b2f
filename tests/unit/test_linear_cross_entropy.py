"""linear_cross_entropy: W_o and the summed cross-entropy as one autograd node, equal to
F.cross_entropy of the layer's fp32 logits (values and every gradient)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.models.components import fused_gru, onednn
from dialoglab.models.components import linear_cross_entropy as module
from dialoglab.models.components.column_major_linear import ColumnMajorLinear
from dialoglab.models.components.linear_cross_entropy import (
    LinearCrossEntropyFunction,
    column_sums,
    fused_applies,
    linear_cross_entropy,
    summed_nll,
)

M, I, V = 12, 7, 33  # noqa: E741 (rows, input size, vocabulary)


@pytest.fixture(autouse=True, params=["cpp", "aten"], ids=["cpp-pass", "aten-pass"])
def loss_pass(request, monkeypatch):
    """Every test with the C++ loss pass (softmax_xent.cpp; skipped only where the extension
    cannot be built) and with the ATen ops that stand in for it."""
    if request.param == "cpp" and not fused_gru.compiled_loops():
        pytest.skip("the C++ extension cannot be built here (no compiler)")
    monkeypatch.setattr(module, "COMPILED_PASS", request.param == "cpp")
    return request.param


@pytest.fixture(params=[True, False], ids=["onednn", "torch"])
def enabled(request, monkeypatch):
    """oneDNN products (where the build has them) and torch's own."""
    if request.param and not onednn.AVAILABLE:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(onednn, "ENABLED", request.param)


def _reference(x, layer, targets, label_smoothing=0.0, scale=0.37):
    """Loss and gradients (x, every parameter) of F.cross_entropy over layer(x)'s real rows."""
    logits = layer(x)[: targets.numel()]
    loss = F.cross_entropy(
        logits.float(), targets, reduction="sum", label_smoothing=label_smoothing
    )
    grads = torch.autograd.grad(loss * scale, [x, *layer.parameters()])
    return loss.detach(), grads


@pytest.mark.parametrize("layer_type", [ColumnMajorLinear, nn.Linear])
@pytest.mark.parametrize("n", [M, 5], ids=["no-padding", "padding-rows"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_equals_cross_entropy_of_the_layers_logits(enabled, layer_type, n, label_smoothing):
    torch.manual_seed(0)
    layer = layer_type(I, V)
    x = torch.randn(M, I, requires_grad=True)
    if n < M:
        with torch.no_grad():
            x[n:] = 0  # row_buckets' padding rows: zeros
    targets = torch.randint(0, V, (n,))
    want_loss, want_grads = _reference(x, layer, targets, label_smoothing)
    loss = linear_cross_entropy(x, layer, targets, label_smoothing)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    grads = torch.autograd.grad(loss * 0.37, [x, *layer.parameters()])
    torch.testing.assert_close(loss.detach(), want_loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    if n < M:
        assert not grads[0][n:].any()  # padding rows get no gradient


def test_gradcheck_in_double_precision():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 8, 0, 3])  # rows 4 and 5: padding
    for eps in (0.0, 0.2):

        def f(x, w, b, eps=eps):
            return LinearCrossEntropyFunction.apply(x, w, b, targets, eps)

        assert torch.autograd.gradcheck(f, (x, w, b))


def test_bf16_autocast_products_in_bf16_loss_close_to_fp32():
    torch.manual_seed(0)
    layer = ColumnMajorLinear(I, V)
    x = torch.randn(M, I, requires_grad=True)
    targets = torch.randint(0, V, (M,))
    want_loss, want_grads = _reference(x, layer, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(x, layer, targets)
        reference_bf16 = summed_nll(layer(x), targets)  # what the unfused path computes
    assert loss.dtype == torch.float32
    grads = torch.autograd.grad(loss * 0.37, [x, *layer.parameters()])
    assert [g.dtype for g in grads] == [torch.float32] * 3  # back in the leaves' dtype
    torch.testing.assert_close(loss.detach(), reference_bf16.detach(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(loss.detach(), want_loss, rtol=0.02, atol=0.05)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.02)


def test_without_grad_only_the_loss():
    torch.manual_seed(0)
    layer = ColumnMajorLinear(I, V)
    x = torch.randn(M, I)
    targets = torch.randint(0, V, (M,))
    with torch.no_grad():
        loss = linear_cross_entropy(x, layer, targets)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, summed_nll(layer(x), targets).detach())


def test_other_layers_go_through_their_own_forward():
    """A quantized copy (or any other module) is called as it is, then `summed_nll`."""
    torch.manual_seed(0)
    linear = nn.Linear(I, V)
    quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear})[0]
    assert fused_applies(linear) and fused_applies(ColumnMajorLinear(I, V))
    assert not fused_applies(quantized)
    x = torch.randn(M, I)
    targets = torch.randint(0, V, (M - 2,))
    loss = linear_cross_entropy(x, quantized, targets)
    torch.testing.assert_close(loss, summed_nll(quantized(x)[: M - 2], targets))


def test_more_targets_than_rows_is_an_error():
    with pytest.raises(ValueError, match="N <= x's 3 rows"):
        linear_cross_entropy(torch.randn(3, I), nn.Linear(I, V), torch.zeros(4, dtype=torch.long))


def test_target_out_of_range_names_its_row(loss_pass):
    layer, x = nn.Linear(I, V), torch.randn(3, I)
    targets = torch.tensor([0, V, 1])
    if loss_pass == "cpp":
        with pytest.raises(RuntimeError, match=f"target {V} at row 1 is not a class id"):
            linear_cross_entropy(x, layer, targets)
    else:  # ATen's gather: an index error of its own
        with pytest.raises((RuntimeError, IndexError)):
            linear_cross_entropy(x, layer, targets)


def test_extreme_logits_stay_finite():
    """Logits far apart (a saturated softmax) give the loss and gradient of F.cross_entropy."""
    torch.manual_seed(0)
    layer = nn.Linear(I, V)
    with torch.no_grad():
        layer.weight.mul_(60.0)
    x = torch.randn(M, I, requires_grad=True)
    targets = torch.randint(0, V, (M,))
    want_loss, want_grads = _reference(x, layer, targets)
    loss = linear_cross_entropy(x, layer, targets)
    grads = torch.autograd.grad(loss * 0.37, [x, *layer.parameters()])
    assert torch.isfinite(loss) and want_loss > 100
    torch.testing.assert_close(loss.detach(), want_loss, rtol=1e-5, atol=1e-3)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_kept_rows_equals_boolean_indexing_with_its_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3, requires_grad=True)
    keep = torch.rand(4, 5) < 0.6
    keep[0] = True
    g = torch.randn(int(keep.sum()), 3)
    (want,) = torch.autograd.grad(x[keep], x, g)
    rows = module.kept_rows(x, keep)
    (got,) = torch.autograd.grad(rows, x, g)
    assert torch.equal(rows, x[keep]) and torch.equal(got, want)
    assert module.kept_rows(x, torch.zeros(4, 5, dtype=torch.bool)).shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_pass_leaves_the_logits_alone_when_no_gradient_follows(loss_pass, dtype):
    """The loss pass (C++ or ATen ops) gives the same summed loss with and without the gradient
    written; without it (no_grad, e.g. validation) the logits stay as they were."""

    def summed(logits, write_grad):
        if loss_pass == "cpp":
            xent = torch.ops.dialoglab_gru.softmax_xent_
            return xent(logits, targets, 0.1, write_grad).sum()
        return module._xent_with_aten_ops(logits, targets, 0.1, write_grad)

    torch.manual_seed(0)
    logits = torch.randn(M, V).to(dtype)
    targets = torch.randint(0, V, (M - 3,))
    kept, written = logits.clone(), logits.clone()
    loss = summed(kept, False)
    assert torch.equal(kept, logits)
    torch.testing.assert_close(summed(written, True), loss)
    want = F.cross_entropy(logits[: M - 3].float(), targets, reduction="sum", label_smoothing=0.1)
    torch.testing.assert_close(loss.float(), want, rtol=1e-5, atol=1e-4)
    assert not written[M - 3 :].any() and not torch.equal(written, logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_column_sums_in_fp32_for_either_gradient_dtype(dtype):
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(37, 300, generator=g).to(dtype)
    sums = column_sums(grad)
    assert sums.dtype == torch.float32 and sums.shape == (300,)
    expected = grad.double().sum(0).float()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 1e-2}
    torch.testing.assert_close(sums, expected, **tol)
