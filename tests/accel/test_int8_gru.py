"""Int8GRU and Int8DecoderStep (quantize=int8): torch.ao's int8 results, run faster."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab.generation import DecodingConfig, generate
from dialoglab.models import quantize as q
from dialoglab.models.components import fused_gru as fused_gru_module
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq
from dialoglab.models.components.int8_gru import Int8DecoderStep, Int8GRU

pytestmark = pytest.mark.skipif(
    not q.int8_available(), reason="no quantized int8 kernels on this machine"
)
B, T, I, H = 4, 7, 6, 16  # noqa: E741 (batch, time, input, hidden)


@pytest.fixture(params=["python", "compiled"], ids=["py-loops", "cpp-loops"])
def loops(request, monkeypatch):
    """Int8GRU's time loop in Python and in C++ (skipped only where it cannot be built)."""
    if request.param == "python":
        monkeypatch.setattr(fused_gru_module, "_loops_state", {"loaded": False})
    elif not fused_gru_module.compiled_loops():
        pytest.skip("the C++ loops cannot be built here (no compiler)")
    return request.param


def _dynamic(module: nn.Module) -> nn.Module:
    """torch.ao's dynamic int8 copy of a GRU (the layer quantize=int8 starts from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao quantization is deprecated
        return torch.ao.quantization.quantize_dynamic(
            nn.Sequential(module), {nn.GRU}, dtype=torch.qint8
        )[0]


def _packed_run(rnn: nn.Module, x, lengths, batch_first: bool):
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h_n = rnn(packed)
    out, _ = pad_packed_sequence(
        out, batch_first=batch_first, total_length=x.size(1 if batch_first else 0)
    )
    return out, h_n


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-first"])
def test_int8_gru_equals_torch_ao_dynamic_gru(loops, bidirectional, batch_first) -> None:
    torch.manual_seed(0)
    gru = nn.GRU(I, H, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    reference = _dynamic(gru)
    fast = Int8GRU.from_quantized(reference)
    D = 2 if bidirectional else 1
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    h0 = torch.randn(2 * D, B, H)
    lengths = torch.tensor([3, 7, 1, 5])
    with torch.no_grad():
        for got, expected in (
            (fast(x, h0), reference(x, h0)),  # every row full length, a given state
            (fast(x, lengths=lengths), _packed_run(reference, x, lengths, batch_first)),
        ):
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        out, _ = fast(x, lengths=lengths)
        padding = torch.arange(T).unsqueeze(1) >= lengths  # (T, B)
        padding = padding.t() if batch_first else padding
        assert out[padding].abs().max() == 0  # padding outputs are 0, as packing gives
        # int8 stays close to the fp32 GRU it came from
        fp32, _ = gru(x, h0)
        assert (fast(x, h0)[0] - fp32).abs().max() < 0.05


def test_int8_gru_takes_only_qint8_grus() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.GRU(I, H)), {nn.GRU}, dtype=torch.float16
        )[0]
    assert not Int8GRU.supports(half) and Int8GRU.supports(_dynamic(nn.GRU(I, H)))
    with pytest.raises(ValueError, match="qint8 dynamic GRU"):
        Int8GRU.from_quantized(half)


def _int8_net(attention: str) -> GRUAttnSeq2Seq:
    torch.manual_seed(0)
    config = GRUAttnConfig(
        vocab_size=40, hidden_size=H, encoder_n_layers=2, decoder_n_layers=2, attention=attention
    )
    holder = nn.Module()
    holder.family, holder.net = "seq2seq", GRUAttnSeq2Seq(config).eval()
    return q.quantize_model(holder, "int8").net


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_decoder_step_kernel_equals_the_python_decoder(attention: str) -> None:
    if not fused_gru_module.compiled_loops():
        pytest.skip("the C++ loops cannot be built here (no compiler)")
    net = _int8_net(attention)
    decoder = net.decoder
    assert isinstance(decoder.step_kernel, Int8DecoderStep)
    assert isinstance(net.encoder.rnn, Int8GRU) and isinstance(decoder.rnn, Int8GRU)
    src = torch.randint(4, 40, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    tokens = torch.randint(4, 40, (3, 1))
    with torch.no_grad():
        keys, state, mask = net.encode(src, lengths)
        fast = decoder(tokens, state, keys, mask)
        kernel, decoder.step_kernel = decoder.step_kernel, None  # the same int8 layers in Python
        slow = decoder(tokens, state, keys, mask)
        for a, b in zip(fast, slow, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert fast[2][1, 0, 2:].abs().max() == 0  # no attention on padding
        config = DecodingConfig(strategy="greedy", max_length=8)
        python_replies = generate(net, src, lengths, config)
        decoder.step_kernel = kernel
        assert torch.equal(generate(net, src, lengths, config), python_replies)
        beam = DecodingConfig(strategy="beam", num_beams=3, max_length=8)
        kernel_beams = generate(net, src, lengths, beam)
        decoder.step_kernel = None
        assert torch.equal(kernel_beams, generate(net, src, lengths, beam))


def test_int8_model_copies_and_reloads_its_kernel() -> None:
    if not fused_gru_module.compiled_loops():
        pytest.skip("the C++ loops cannot be built here (no compiler)")
    net = _int8_net("dot")
    src, lengths = torch.randint(4, 40, (2, 5)), torch.tensor([5, 3])
    config = DecodingConfig(strategy="greedy", max_length=6)
    with torch.no_grad():
        replies = generate(net, src, lengths, config)  # builds the kernel
        twin = copy.deepcopy(net)
        assert twin.decoder.step_kernel.decoder is twin.decoder  # the copy's own layers
        assert torch.equal(generate(twin, src, lengths, config), replies)


def test_without_the_extension_int8_replies_run_in_python(monkeypatch) -> None:
    src, lengths = torch.randint(4, 40, (2, 5)), torch.tensor([5, 3])
    config = DecodingConfig(strategy="greedy", max_length=6)
    with torch.no_grad():
        compiled = fused_gru_module.compiled_loops()
        with_kernel = generate(_int8_net("dot"), src, lengths, config) if compiled else None
        monkeypatch.setattr(fused_gru_module, "_loops_state", {"loaded": False})
        net = _int8_net("dot")
        assert isinstance(net.decoder.rnn, Int8GRU) and net.decoder.step_kernel is None
        replies = generate(net, src, lengths, config)
    assert replies.shape[0] == 2 and 1 <= replies.shape[1] <= 6
    if with_kernel is not None:  # the Python loops and decoder give the C++ path's replies
        assert torch.equal(replies, with_kernel)
