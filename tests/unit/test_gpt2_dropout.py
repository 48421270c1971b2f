"""models/components/gpt2_dropout.py: GPT-2 with our dropout masks, attention weights included."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from dialoglab.models.components import gpt2_dropout
from dialoglab.models.components.dropout import Dropout
from dialoglab.models.components.gpt2_dropout import ATTENTION, attention_forward, use_fast_dropout
from tests.unit.test_gpt2_model import make_module, tok  # noqa: F401 (fixture)


def tiny(attn_pdrop: float = 0.1, resid_pdrop: float = 0.1) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2,
        attn_pdrop=attn_pdrop, resid_pdrop=resid_pdrop, embd_pdrop=resid_pdrop,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("mask", ["causal", "padding", "additive"])
def test_written_out_attention_equals_sdpa(mask: str, monkeypatch) -> None:
    """With the mask drawn as keep-everything, the dropout path gives SDPA's output."""
    monkeypatch.setattr(gpt2_dropout, "fast_dropout", lambda x, p: x)
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 4) for _ in range(3))
    module = nn.Module()
    module.is_causal = True
    attention_mask = None
    if mask != "causal":
        allowed = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6).clone()
        allowed[1, :, :, :2] = False  # the second row's first two keys are padding
        allowed[1, :, :2, 0] = True  # (each query keeps a key)
        attention_mask = allowed
        if mask == "additive":
            attention_mask = torch.zeros(2, 1, 6, 6).masked_fill(~allowed, -1e9)
    ours, _ = attention_forward(module, q, k, v, attention_mask, dropout=0.5, scaling=0.3)
    expected, _ = sdpa_attention_forward(module, q, k, v, attention_mask, scaling=0.3)
    assert ours.shape == (2, 6, 3, 4)
    torch.testing.assert_close(ours, expected)


def test_model_uses_our_dropout_and_exports_as_plain_gpt2(tmp_path) -> None:
    model, reference = use_fast_dropout(tiny()), tiny()
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert sum(isinstance(m, Dropout) for m in model.modules()) == 1 + 2 * 3  # embd + per block
    assert model.config._attn_implementation == ATTENTION
    ids = torch.arange(12).view(2, 6)
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)  # no dropout: SDPA
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits)


def test_attention_weights_are_dropped_with_our_mask(monkeypatch) -> None:
    """attn_pdrop alone: training outputs move away from evaluation's, reproducibly from the
    seed, and the weights went through our dropout."""
    calls = []
    real = gpt2_dropout.fast_dropout
    monkeypatch.setattr(gpt2_dropout, "fast_dropout", lambda x, p: calls.append(p) or real(x, p))
    model = use_fast_dropout(tiny(attn_pdrop=0.5, resid_pdrop=0.0))
    ids = torch.arange(12).view(2, 6)
    with torch.no_grad():
        evaluated = model.eval()(ids).logits
        model.train()
        torch.manual_seed(3)
        first = model(ids).logits
        torch.manual_seed(3)
        again = model(ids).logits
    assert calls == [0.5] * 4  # per layer and training forward; evaluation drops nothing
    assert not torch.allclose(first, evaluated)
    torch.testing.assert_close(first, again)


def test_module_switch(tok) -> None:  # noqa: F811
    fast, plain = make_module(tok, dropout=0.1), make_module(tok, dropout=0.1, fast_dropout=False)
    assert fast.net.config._attn_implementation == ATTENTION
    assert plain.net.config._attn_implementation == gpt2_dropout.PLAIN_ATTENTION
    assert any(type(m) is nn.Dropout for m in plain.net.modules())
    assert not any(type(m) is nn.Dropout for m in fast.net.modules())


def test_sdpa_keeps_off_cudnn_on_cuda_only() -> None:
    """cuDNN's attention builds a plan per new shape; dialogue batches change shape every step."""
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with gpt2_dropout.sdpa_backends("cuda"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with gpt2_dropout.sdpa_backends("cpu"):
        assert torch.backends.cuda.cudnn_sdp_enabled()


@pytest.mark.parametrize("attention", ["ours", "plain"])
def test_both_attentions_call_sdpa_without_cudnn_on_cuda(monkeypatch, attention: str) -> None:
    seen = []
    monkeypatch.setattr(
        gpt2_dropout,
        "sdpa_attention_forward",
        lambda *args, **kwargs: seen.append(torch.backends.cuda.cudnn_sdp_enabled()) or (0, None),
    )
    query = SimpleNamespace(device=torch.device("cuda"))  # no GPU needed: only its device is read
    forward = {
        "ours": gpt2_dropout.attention_forward,
        "plain": gpt2_dropout.plain_attention_forward,
    }[attention]
    forward(nn.Identity(), query, None, None, None, dropout=0.1)
    assert seen == [False] and torch.backends.cuda.cudnn_sdp_enabled()


def test_plain_attention_matches_hugging_faces_sdpa() -> None:
    model, reference = gpt2_dropout.use_plain_attention(tiny()), tiny()
    assert model.config._attn_implementation == gpt2_dropout.PLAIN_ATTENTION
    ids = torch.arange(12).view(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, reference.eval()(ids).logits)
