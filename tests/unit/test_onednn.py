"""models/components/onednn.py: torch.mm's products (and gradients) through oneDNN, or torch."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.models.components import onednn

needs_onednn = pytest.mark.skipif(not onednn.AVAILABLE, reason="this torch build has no oneDNN")


@pytest.fixture
def on(monkeypatch) -> None:
    """oneDNN on, whatever this CPU's default."""
    monkeypatch.setattr(onednn, "ENABLED", True)


@pytest.fixture(params=[True, False], ids=["onednn", "torch"])
def enabled(request, monkeypatch):
    """Run a test with oneDNN on (where the build has it) and with torch's own ops."""
    if request.param and not onednn.AVAILABLE:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(onednn, "ENABLED", request.param)
    return request.param


def test_mm_and_addmm_equal_torch_for_both_weight_layouts(enabled):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 50, generator=g)
    w = torch.randn(60, 50, generator=g)  # (N, K) like a Linear weight
    bias = torch.randn(60, generator=g)
    for b in (w.t(), w.t().contiguous()):  # transposed view and row-major (K, N)
        torch.testing.assert_close(onednn.mm(a, b), a @ b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(onednn.addmm(bias, a, b), a @ b + bias, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_usable_only_for_row_major_fp32_cpu_left_operands(on):
    a, w = torch.randn(8, 4), torch.randn(6, 4)
    assert onednn._usable(a, w)
    assert not onednn._usable(a.t().contiguous().t(), w)  # a transposed: MKL's case
    assert not onednn._usable(a.double(), w.double())
    assert not onednn._usable(a[:0], w)  # no rows
    assert not onednn._usable(a.bfloat16(), w.bfloat16())  # bf16: `_bf16_usable`'s
    assert not onednn._usable(a, w.bfloat16())  # mixed dtypes


@needs_onednn
def test_bf16_biased_products_where_the_cpu_has_them(monkeypatch):
    """bf16 x @ w^T + b goes through oneDNN's op whatever the fp32 default (torch's bf16 addmm is
    oneDNN's matmul too), where the CPU runs it and DIALOGLAB_ONEDNN_BF16 is not 0; bf16 without
    a bias stays torch.mm's; results stay torch's to bf16 rounding."""
    monkeypatch.setattr(onednn, "ENABLED", False)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 50, generator=g).bfloat16()
    w = torch.randn(60, 50, generator=g).bfloat16()  # (N, K)
    bias = torch.randn(60, generator=g).bfloat16()
    assert onednn._bf16_usable(a, w) == onednn._bf16_supported()
    assert not onednn._usable(a, w)
    for b in (w.t(), w.t().contiguous()):
        torch.testing.assert_close(onednn.mm(a, b), a @ b, rtol=0.02, atol=0.05)
        torch.testing.assert_close(onednn.addmm(bias, a, b), a @ b + bias, rtol=0.02, atol=0.05)
    monkeypatch.setattr(onednn, "BF16_PRODUCTS", False)
    assert not onednn._bf16_usable(a, w)


def test_fallbacks_keep_torch_results_for_other_operands(enabled):
    a = torch.randn(6, 5, dtype=torch.float64)
    b = torch.randn(5, 3, dtype=torch.float64)
    assert onednn.mm(a, b).dtype == torch.float64
    torch.testing.assert_close(onednn.mm(a, b), a @ b)
    strided = torch.randn(5, 6).t()  # (6, 5), not row-major
    torch.testing.assert_close(onednn.mm(strided, b.float()), strided @ b.float())
    assert onednn.mm(torch.randn(0, 5), b.float()).shape == (0, 3)


def test_linear_values_and_gradients_equal_f_linear(enabled):
    torch.manual_seed(0)
    layer = nn.Linear(12, 9)
    x = torch.randn(4, 3, 12, requires_grad=True)
    out = onednn.linear(x, layer)
    assert out.shape == (4, 3, 9)
    assert ("LinearFunction" in type(out.grad_fn).__name__) is enabled
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], g)
    x_ref = x.detach().clone().requires_grad_()
    ref = F.linear(x_ref, layer.weight, layer.bias)
    ref_grads = torch.autograd.grad(ref, [x_ref, layer.weight, layer.bias], g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_without_bias_and_frozen_input(enabled):
    torch.manual_seed(1)
    layer = nn.Linear(7, 5, bias=False)
    x = torch.randn(11, 7)  # no grad wanted for x
    out = onednn.linear(x, layer)
    out.sum().backward()
    torch.testing.assert_close(out, x @ layer.weight.t(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, torch.ones(11, 5).t() @ x, rtol=1e-5, atol=1e-5)


def test_linear_leaves_autocast_and_other_modules_to_torch(enabled):
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert onednn.linear(x, layer).dtype == torch.bfloat16  # autocast's own Linear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao quantization is deprecated (torchao)
        quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear})[0]
    torch.testing.assert_close(onednn.linear(x, quantized), quantized(x))


def test_environment_switch_turns_onednn_off(monkeypatch):
    monkeypatch.setenv("DIALOGLAB_ONEDNN", "0")
    assert onednn._op_available() is False


def test_default_by_cpu_vendor(monkeypatch, tmp_path):
    """On by default where oneDNN measured faster than MKL (AMD), off elsewhere unless asked."""
    monkeypatch.delenv("DIALOGLAB_ONEDNN", raising=False)
    assert onednn.faster_here("AuthenticAMD") and not onednn.faster_here("GenuineIntel")
    assert not onednn.faster_here("")
    monkeypatch.setenv("DIALOGLAB_ONEDNN", "1")
    assert onednn.faster_here("GenuineIntel")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert onednn.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    assert onednn.cpu_vendor(str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("weight_grads", [True, False], ids=["weight-grads-on", "off"])
def test_weight_grad_equals_the_transposed_product_and_column_sums(
    enabled, weight_grads, monkeypatch
):
    monkeypatch.setattr(onednn, "WEIGHT_GRADS", weight_grads)
    g = torch.Generator().manual_seed(0)
    d_y, x = torch.randn(37, 60, generator=g), torch.randn(37, 50, generator=g)
    dw, db = onednn.weight_grad(d_y, x, torch.float32, with_bias=True)
    assert dw.shape == (60, 50) and dw.is_contiguous() and dw.dtype == torch.float32
    torch.testing.assert_close(dw, d_y.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(db, d_y.sum(0), rtol=1e-5, atol=1e-4)
    dw, db = onednn.weight_grad(d_y, x, torch.float32, with_bias=False)
    assert db is None
    torch.testing.assert_close(dw, d_y.t() @ x, rtol=1e-5, atol=1e-4)


def test_weight_grad_of_bf16_operands_comes_back_in_the_asked_dtype():
    d_y, x = torch.randn(8, 6).bfloat16(), torch.randn(8, 4).bfloat16()
    dw, db = onednn.weight_grad(d_y, x, torch.float32, with_bias=True)
    assert dw.dtype == db.dtype == torch.float32
    torch.testing.assert_close(dw, d_y.float().t() @ x.float(), rtol=2e-2, atol=2e-2)
