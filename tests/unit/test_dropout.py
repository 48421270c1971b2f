"""models/components/dropout.py: F.dropout's behaviour with a cheaper CPU mask."""

from __future__ import annotations

import pytest
import torch

from dialoglab.models.components.dropout import Dropout, dropout


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
