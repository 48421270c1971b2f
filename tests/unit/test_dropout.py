"""models/components/dropout.py: F.dropout's behaviour with a cheaper CPU mask."""

from __future__ import annotations

import pytest
import torch

from dialoglab.models.components import dropout as dropout_module
from dialoglab.models.components.dropout import Dropout, dropout
from dialoglab.models.components.fused_gru import compiled_loops


@pytest.fixture(autouse=True, params=["hashed", "randint"])
def mask_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the C++ hashed masks and with torch.randint's."""
    if request.param == "hashed" and not compiled_loops():
        pytest.skip("the C++ extension (hashed masks) is not built here")
    monkeypatch.setattr(dropout_module, "HASHED", request.param == "hashed")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drop_rate_scale_and_dtype(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.ones(1001, 997, dtype=dtype)  # numel not a multiple of 4
    y = dropout(x, 0.1)
    assert y.dtype == dtype and y.shape == x.shape
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002  # ~1M draws: std ~0.0003
    kept = y[y != 0].float()
    torch.testing.assert_close(
        kept, torch.full_like(kept, 65536 / (65536 - 6554)), rtol=1e-2, atol=0
    )
    assert abs(y.float().mean().item() - 1.0) < 0.005  # expectation preserved


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 50, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    keep = y.detach() != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(x.grad, keep.float() * scale)
    torch.testing.assert_close(y.detach()[keep], x.detach()[keep] * scale)


def test_reproducible_from_the_seed_and_off_in_eval() -> None:
    x = torch.randn(8, 33)
    torch.manual_seed(5)
    a = dropout(x, 0.5)
    torch.manual_seed(5)
    b = dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, dropout(x, 0.5))
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    module = Dropout(0.5).eval()
    assert module(x) is x and "p=0.5" in repr(module)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\]"):
        Dropout(1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_takes_the_forward_mask_for_any_gradient_layout(dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    x = torch.randn(40, 30, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.25)
    weights = torch.randn(30, 40, dtype=dtype).t()  # a non-contiguous incoming gradient
    (y * weights).sum().backward()
    keep = y.detach() != 0
    scale = 65536 / (65536 - round(0.25 * 65536))
    expected = (keep.float() * scale * weights.float()).to(dtype)
    torch.testing.assert_close(x.grad, expected)


def test_masks_have_no_visible_pattern() -> None:
    """Drop rates hold in every block of the tensor, neighbours are not correlated, and two
    calls (two seeds) draw different masks."""
    torch.manual_seed(3)
    x = torch.ones(256, 4096)
    dropped = (dropout(x, 0.5) == 0).float()
    per_block = dropped.view(64, -1).mean(dim=1)  # 16,384 elements a block: std ~0.004
    assert (per_block - 0.5).abs().max() < 0.025
    flat = dropped.view(-1) - dropped.mean()
    for lag in (1, 2, 3, 4, 4096):
        corr = (flat[:-lag] * flat[lag:]).mean() / flat.pow(2).mean()
        assert abs(corr.item()) < 0.01, f"lag {lag}: correlation {corr.item():.4f}"
    again = (dropout(x, 0.5) == 0).float()
    assert (again != dropped).float().mean().item() > 0.45  # independent masks differ on ~half


def test_hashed_op_rejects_what_it_cannot_take() -> None:
    if not compiled_loops():
        pytest.skip("the C++ extension is not built here")
    with pytest.raises(RuntimeError, match="hashed_dropout: fp32 or bf16 input"):
        torch.ops.dialoglab_gru.hashed_dropout(torch.ones(4, dtype=torch.float64), 1, 100, 1.0)
    with pytest.raises(RuntimeError, match=r"threshold in \[0, 65536\]"):
        torch.ops.dialoglab_gru.hashed_dropout(torch.ones(4), 1, 70000, 1.0)
    # a tensor past the hash's 32-bit index takes the randint path (checked by size alone)
    assert not dropout_module._hashed_applies(torch.zeros(1, 1).expand(1 << 16, 1 << 16))
    assert dropout_module._hashed_applies(torch.ones(8)) == dropout_module.HASHED
    # float64 input takes the randint path through `dropout`, with its own mask
    y = dropout(torch.ones(64, 64, dtype=torch.float64), 0.5)
    assert y.dtype == torch.float64 and 0.4 < (y == 0).double().mean().item() < 0.6


def test_compiles_with_torch_compile() -> None:
    """Under torch.compile's tracing the mask comes from the randint path's ATen ops (the C++
    op has no symbolic-shape version); the compiled function drops and scales as eager does."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: dropout(x, 0.5) * 2.0, backend="eager", fullgraph=True)
    torch.manual_seed(4)
    y = compiled(torch.ones(64, 64))
    assert 0.4 < (y == 0).float().mean().item() < 0.6
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 * 65536 / 32768))


def test_hashed_masks_switches_to_the_randint_masks_inside_the_block(
    mask_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(32, 48)
    torch.manual_seed(6)
    with dropout_module.hashed_masks(False):
        inside = dropout(x, 0.3)
    assert (mask_path == "hashed") == dropout_module.HASHED  # restored
    monkeypatch.setattr(dropout_module, "HASHED", False)
    torch.manual_seed(6)
    assert torch.equal(inside, dropout(x, 0.3))  # the randint path's mask
