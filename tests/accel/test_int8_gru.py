"""accel/int8_gru.py (quantize=int8): Int8GRU and the decoder's one-token C++ step give
torch.ao's int8 results, as `accel.for_inference(model, "int8")` puts them in place."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab import accel
from dialoglab.accel import fused_gru as fused_gru_module
from dialoglab.accel import int8_gru as int8_gru_module
from dialoglab.accel.gru_attn import Int8GRUEncoder, Int8StepDecoder
from dialoglab.accel.int8_gru import Int8DecoderStep, Int8GRU
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.generation import DecodingConfig, generate
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from dialoglab.models.seq2seq import Seq2SeqModule
from tests.helpers.run_if import run_if

pytestmark = run_if(int8=True)
B, T, I, H = 4, 7, 6, 16  # noqa: E741 (batch, time, input, hidden)


def without_compiled_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure PyTorch paths, as where the C++ extension cannot be built."""
    for module in (fused_gru_module, int8_gru_module):
        monkeypatch.setattr(module, "compiled_loops", lambda: False)


@pytest.fixture(
    params=["python", pytest.param("compiled", marks=run_if(compiled_extension=True))],
    ids=["py-loops", "cpp-loops"],
)
def loops(request, monkeypatch):
    """Int8GRU's time loop in Python and in C++ (built on first use)."""
    if request.param == "python":
        without_compiled_loops(monkeypatch)
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


WORDS = [f"w{i}" for i in range(36)]


def _int8_model(attention: str, int8_kernels: bool = True) -> Seq2SeqModule:
    """A small gru_attn module (2+2 layers) held as `accel.for_inference(model, "int8")` holds
    it; without `int8_kernels`, torch.ao's own int8 layers."""
    tok = WordTokenizer(min_count=1).fit([" ".join(WORDS)])
    torch.manual_seed(0)
    partial = functools.partial(
        GRUAttnSeq2Seq,
        hidden_size=H,
        encoder_n_layers=2,
        decoder_n_layers=2,
        attention=attention,
        dropout=0.0,
    )
    module = Seq2SeqModule(tok, partial, functools.partial(torch.optim.Adam, lr=1e-3))
    settings = {"int8_kernels": int8_kernels}
    return accel.for_inference(module, "int8", settings)


def _src(rows: int, width: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 40, (rows, width), generator=g)


@run_if(compiled_extension=True)
@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_decoder_step_kernel_equals_the_python_decoder(attention: str) -> None:
    net = _int8_model(attention).net
    decoder = net.decoder
    assert isinstance(decoder, Int8StepDecoder) and isinstance(net.encoder, Int8GRUEncoder)
    assert isinstance(decoder.int8_step, Int8DecoderStep)
    assert isinstance(net.encoder.rnn, Int8GRU) and isinstance(decoder.rnn, Int8GRU)
    src = _src(3, 6)
    lengths = torch.tensor([6, 2, 4])
    tokens = torch.randint(4, 40, (3, 1))
    with torch.no_grad():
        keys, state, mask = net.encode(src, lengths)
        fast = decoder(tokens, state, keys, mask)
        kernel, decoder.int8_step = decoder.int8_step, None  # the same int8 layers in Python
        slow = decoder(tokens, state, keys, mask)
        for a, b in zip(fast, slow, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert fast[2][1, 0, 2:].abs().max() == 0  # no attention on padding
        config = DecodingConfig(strategy="greedy", max_length=8)
        python_replies = generate(net, src, lengths, config)
        decoder.int8_step = kernel
        assert torch.equal(generate(net, src, lengths, config), python_replies)
        beam = DecodingConfig(strategy="beam", num_beams=3, max_length=8)
        kernel_beams = generate(net, src, lengths, beam)
        decoder.int8_step = None
        assert torch.equal(kernel_beams, generate(net, src, lengths, beam))


@pytest.mark.parametrize("attention", ["dot", "concat"])
def test_int8_kernels_give_torch_aos_replies(loops, attention: str) -> None:
    """`accel.int8_kernels` on or off: the same int8 weights, the same logits and replies."""
    fast, plain = _int8_model(attention), _int8_model(attention, int8_kernels=False)
    assert not isinstance(plain.net.encoder.rnn, Int8GRU)
    assert isinstance(fast.net.encoder.rnn, Int8GRU) and isinstance(fast.net.decoder.rnn, Int8GRU)
    assert isinstance(fast.net.decoder, Int8StepDecoder) == (loops == "compiled")
    src, lengths = _src(3, 6), torch.tensor([6, 2, 4])
    decoder_input = torch.cat([torch.ones(3, 1, dtype=torch.long), _src(3, 4, seed=2)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            fast.net(src, lengths, decoder_input),
            plain.net(src, lengths, decoder_input),
            rtol=1e-5,
            atol=1e-5,
        )
        for strategy in ("greedy", "beam"):
            config = DecodingConfig(strategy=strategy, num_beams=3, max_length=8)
            assert torch.equal(
                fast.generate_ids(src, lengths, config), plain.generate_ids(src, lengths, config)
            )


@run_if(compiled_extension=True)
def test_int8_model_copies_and_reloads_its_kernel() -> None:
    net = _int8_model("dot").net
    src, lengths = _src(2, 5), torch.tensor([5, 3])
    config = DecodingConfig(strategy="greedy", max_length=6)
    with torch.no_grad():
        replies = generate(net, src, lengths, config)  # builds the kernel
        twin = copy.deepcopy(net)
        assert twin.decoder.int8_step.decoder is twin.decoder  # the copy's own layers
        assert torch.equal(generate(twin, src, lengths, config), replies)


def test_without_the_extension_int8_replies_run_in_python(monkeypatch) -> None:
    src, lengths = _src(2, 5), torch.tensor([5, 3])
    config = DecodingConfig(strategy="greedy", max_length=6)
    with torch.no_grad():
        compiled = fused_gru_module.compiled_loops()
        with_kernel = generate(_int8_model("dot").net, src, lengths, config) if compiled else None
        without_compiled_loops(monkeypatch)
        net = _int8_model("dot").net
        assert isinstance(net.decoder.rnn, Int8GRU) and not isinstance(net.decoder, Int8StepDecoder)
        replies = generate(net, src, lengths, config)
    assert replies.shape[0] == 2 and 1 <= replies.shape[1] <= 6
    if with_kernel is not None:  # the Python loops and decoder give the C++ path's replies
        assert torch.equal(replies, with_kernel)


def test_none_and_bf16_swap_in_no_int8_kernel() -> None:
    """Only int8 weights get the int8 kernels; fp32 ones get the fused GRU classes."""
    from dialoglab.accel.gru_attn import FusedGRUDecoder, FusedGRUEncoder

    for quantize in ("none", "bf16"):
        tok = WordTokenizer(min_count=1).fit([" ".join(WORDS)])
        net = functools.partial(
            GRUAttnSeq2Seq, hidden_size=H, encoder_n_layers=1, decoder_n_layers=1
        )
        module = Seq2SeqModule(tok, net, functools.partial(torch.optim.Adam, lr=1e-3))
        module = accel.for_inference(module, quantize, {})
        assert module.inference_weights == quantize
        assert type(module.net.encoder) is FusedGRUEncoder
        assert type(module.net.decoder) is FusedGRUDecoder
        assert not any(isinstance(m, Int8GRU) for m in module.net.modules())
