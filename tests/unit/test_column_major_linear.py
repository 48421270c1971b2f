"""ColumnMajorLinear: nn.Linear's values, gradients and state dict, with W stored (in, out)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dialoglab.models.components import onednn
from dialoglab.models.components.column_major_linear import ColumnMajorLinear


def twins(
    bias: bool = True, n_in: int = 12, n_out: int = 20
) -> tuple[nn.Linear, ColumnMajorLinear]:
    torch.manual_seed(0)
    linear = nn.Linear(n_in, n_out, bias=bias)
    torch.manual_seed(0)
    return linear, ColumnMajorLinear(n_in, n_out, bias=bias)


def test_same_seed_same_initial_values_stored_in_out() -> None:
    linear, layer = twins()
    assert torch.equal(layer.weight, linear.weight) and torch.equal(layer.bias, linear.bias)
    assert layer.weight_t.shape == (12, 20) and layer.weight_t.is_contiguous()
    assert layer.weight.data_ptr() == layer.weight_t.data_ptr()  # a view, not a copy
    assert [name for name, _ in layer.named_parameters()] == ["weight_t", "bias"]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12)])
def test_fp32_values_and_gradients_equal_nn_linear(bias: bool, shape: tuple[int, ...]) -> None:
    linear, layer = twins(bias)
    x = torch.randn(*shape)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = linear(x1), layer(x2)
    torch.testing.assert_close(y2, y1)
    d_y = torch.randn_like(y1)
    y1.backward(d_y)
    y2.backward(d_y)
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(layer.weight_t.grad, linear.weight.grad.t())
    assert layer.weight_t.grad.is_contiguous()  # the parameter's own layout: no copy by autograd
    if bias:
        torch.testing.assert_close(layer.bias.grad, linear.bias.grad)


def test_fp32_training_goes_through_the_onednn_function(monkeypatch) -> None:
    if not onednn.AVAILABLE:
        pytest.skip("this torch build has no oneDNN fp32 linear")
    monkeypatch.setattr(onednn, "ENABLED", True)  # whatever this CPU's default
    _, layer = twins()
    y = layer(torch.randn(4, 12))
    assert type(y.grad_fn).__name__ == "ColumnMajorLinearFunctionBackward"


def test_bf16_autocast_matches_nn_linear() -> None:
    linear, layer = twins()
    x = torch.randn(6, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = linear(x), layer(x)
    assert y2.dtype == torch.bfloat16
    torch.testing.assert_close(y2, y1)


def test_state_dict_is_nn_linears_both_ways() -> None:
    linear, layer = twins()
    state = layer.state_dict()
    assert list(state) == ["weight", "bias"] and state["weight"].shape == (20, 12)
    torch.testing.assert_close(state["weight"], linear.weight.detach())
    other = nn.Linear(12, 20)
    other.load_state_dict(state)  # ours into nn.Linear
    assert torch.equal(other.weight, layer.weight)
    fresh = ColumnMajorLinear(12, 20)
    fresh.load_state_dict(linear.state_dict())  # nn.Linear's into ours
    assert torch.equal(fresh.weight, linear.weight) and fresh.weight_t.is_contiguous()


def test_bad_state_dicts_name_the_weight_key() -> None:
    layer = ColumnMajorLinear(12, 20)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: .*\(20, 13\)"):
        layer.load_state_dict({"weight": torch.zeros(20, 13), "bias": torch.zeros(20)})
    result = layer.load_state_dict({"bias": torch.zeros(20)}, strict=False)
    assert result.missing_keys == ["weight"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"weight\""):
        layer.load_state_dict({"bias": torch.zeros(20)})


def test_to_linear_and_from_linear_keep_the_values() -> None:
    linear, layer = twins()
    back = layer.to_linear()
    assert type(back) is nn.Linear and back.weight.is_contiguous()
    assert torch.equal(back.weight, linear.weight) and torch.equal(back.bias, linear.bias)
    again = ColumnMajorLinear.from_linear(back)
    assert torch.equal(again.weight, linear.weight)
    x = torch.randn(3, 12)
    torch.testing.assert_close(again(x), linear(x))


def test_fused_adam_updates_it_like_nn_linear() -> None:
    linear, layer = twins()
    x, d_y = torch.randn(8, 12), torch.randn(8, 20)
    for module in (linear, layer):
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2, fused=True)
        for _ in range(3):
            optimizer.zero_grad()
            module(x).backward(d_y)
            optimizer.step()
    torch.testing.assert_close(layer.weight, linear.weight)
    assert layer.weight_t.is_contiguous()
