"""`quantize: auto | none | int8 | bf16`: how chat holds a model's weights (dialoglab.models.quantize)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from dialoglab import accel
from dialoglab.chat.bot import Chatbot
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.errors import ConfigError
from dialoglab.models import quantize as q
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from dialoglab.models.quantize import quantize_model, resolve_quantize, weights_of
from dialoglab.models.seq2seq import Seq2SeqModule
from tests.helpers.run_if import run_if

PAIRS = [
    ("hello", "hi there, nice to see you."),
    ("how are you?", "i am fine, thank you."),
    ("what is your name?", "my name is bot."),
    ("where are you from?", "i am from the computer."),
    ("do you like movies?", "yes, i love old movies."),
    ("what time is it?", "it is late, go to bed."),
    ("tell me a joke", "i am not funny at all."),
    ("who made you?", "a team of people made me."),
    ("are you a robot?", "no, i am a chatbot."),
    ("good night", "good night, sleep well."),
    ("what do you eat?", "i eat electricity."),
    ("are you happy?", "yes, very happy today."),
]


@pytest.fixture(scope="module")
def trained() -> Seq2SeqModule:
    """gru_attn (hidden 32, 2+2 layers) trained for a few full-batch steps on PAIRS."""
    tok = WordTokenizer(min_count=1).fit([t for pair in PAIRS for t in pair])
    torch.manual_seed(0)
    net = functools.partial(
        GRUAttnSeq2Seq, hidden_size=32, encoder_n_layers=2, decoder_n_layers=2, dropout=0.0
    )
    module = Seq2SeqModule(tok, net, functools.partial(torch.optim.Adam, lr=1e-2))
    src, lengths = module.encode_contexts([[p] for p, _ in PAIRS])
    targets = [[*tok.encode(r), tok.eos_id] for _, r in PAIRS]
    T = max(map(len, targets))
    target = torch.full((len(PAIRS), T), tok.pad_id, dtype=torch.long)
    for i, row in enumerate(targets):
        target[i, : len(row)] = torch.tensor(row)
    decoder_input = torch.cat([torch.full((len(PAIRS), 1), tok.sos_id), target[:, :-1]], dim=1)
    optimizer = torch.optim.Adam(module.net.parameters(), lr=1e-2)
    module.net.train()
    for _ in range(80):
        logits = module.net(src, lengths, decoder_input)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=tok.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5, loss.item()
    module.eval()
    module._batch = (src, lengths, decoder_input)  # for the logits comparisons
    return module


def logits_of(module: Seq2SeqModule) -> torch.Tensor:
    with torch.no_grad():
        return module.net(*module._batch).float()


@pytest.mark.parametrize(
    ("mode", "tolerance"),
    [pytest.param("int8", 0.08, marks=run_if(int8=True)), ("bf16", 0.02)],
)
@pytest.mark.parametrize("speed_paths", [True, False], ids=["accel", "plain"])
def test_quantized_replies_match_fp32(
    trained: Seq2SeqModule, mode: str, tolerance: float, speed_paths: bool
) -> None:
    """As chat holds the model (`accel.for_inference`, speed paths on or off)."""
    settings = None if speed_paths else accel.NONE
    converted = accel.for_inference(copy.deepcopy(trained), mode, settings)
    assert weights_of(converted) == mode and weights_of(trained) == "none"
    reference, approx = logits_of(trained), logits_of(converted)
    # Close in scale: the largest error is a few percent of the logits' range.
    error = (approx - reference).abs().max() / reference.abs().max()
    assert error < tolerance, float(error)
    # ... and the decisions agree: next-token argmax on (nearly) every position.
    agree = (approx.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree >= 0.95, float(agree)
    contexts = [[p] for p, _ in PAIRS]
    for decoding in ("greedy", "beam"):
        fp32 = trained.reply(contexts, decoding=decoding)
        fast = converted.reply(contexts, decoding=decoding)
        same = sum(a == b for a, b in zip(fp32, fast, strict=True))
        assert same >= len(PAIRS) - 1, list(zip(fp32, fast, strict=True))
    assert all(r.strip() for r in converted.reply(contexts, decoding="sample"))


@run_if(int8=True)
def test_int8_converts_linear_and_rnn_layers(trained: Seq2SeqModule) -> None:
    """quantize_model holds torch.ao's int8 layers, and accel.for_inference keeps them."""
    qdynamic = torch.ao.nn.quantized.dynamic
    for net in (
        quantize_model(copy.deepcopy(trained), "int8").net,
        accel.for_inference(copy.deepcopy(trained), "int8").net,
    ):
        assert isinstance(net.decoder.W_o, qdynamic.Linear)
        assert isinstance(net.encoder.rnn, qdynamic.GRU)
        assert isinstance(net.decoder.rnn, qdynamic.GRU)
        assert not any(type(m) in (torch.nn.Linear, torch.nn.GRU) for m in net.modules())


def test_bf16_holds_bf16_weights_and_attention_works(trained: Seq2SeqModule) -> None:
    module = quantize_model(copy.deepcopy(trained), "bf16")
    assert {p.dtype for p in module.net.parameters()} == {torch.bfloat16}
    bot = Chatbot(module, decoding="greedy")
    reply = bot.reply("hello", with_attention=True)
    assert reply.text.strip() and reply.attention is not None and reply.attention.weights
    assert bot.describe()["quantize"] == "bf16"


@pytest.mark.parametrize("mode", ["none", None, "NONE"])
def test_none_keeps_the_fp32_network_as_trained(trained: Seq2SeqModule, mode: str | None) -> None:
    module = copy.deepcopy(trained)
    net = module.net
    assert quantize_model(module, mode).net is net
    assert weights_of(module) == "none" and not module.training
    for (name, before), after in zip(trained.net.named_parameters(), net.parameters(), strict=True):
        assert after.dtype == torch.float32 and torch.equal(after, before), name
        assert after.is_contiguous(), name  # the training layout
    torch.testing.assert_close(logits_of(module), logits_of(trained), rtol=1e-5, atol=1e-5)
    contexts = [[p] for p, _ in PAIRS]
    for decoding in ("greedy", "beam"):
        assert module.reply(contexts, decoding=decoding) == trained.reply(
            contexts, decoding=decoding
        )


def test_gpt2_none_keeps_the_network_as_trained(gpt2) -> None:
    module = quantize_model(copy.deepcopy(gpt2), "none")
    head, embedding = module.net.lm_head.weight, module.net.transformer.wte.weight
    assert head is embedding  # still tied, as trained
    torch.testing.assert_close(gpt2_logits(module), gpt2_logits(gpt2), rtol=1e-5, atol=1e-5)
    contexts = [["hello there, how are you?"]]
    assert module.reply(contexts, decoding="greedy") == gpt2.reply(contexts, decoding="greedy")


@pytest.mark.parametrize("bad", ["int4", "fp16", "", 8, True])
def test_bad_values_name_the_key(trained: Seq2SeqModule, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"quantize must be one of auto, none, int8, bf16"):
        quantize_model(copy.deepcopy(trained), bad)


def test_auto_and_device_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "_INT8_CHECK", "")
    assert resolve_quantize("auto", "seq2seq", "cpu") == "int8"
    assert resolve_quantize("auto", "causal_lm", "cpu") == "int8"
    assert resolve_quantize("auto", "seq2seq", "cuda") == "none"
    assert resolve_quantize("auto", "causal_lm", "cuda") == "none"
    assert resolve_quantize("auto", "unknown", "cpu") == "none"
    assert resolve_quantize("bf16", "seq2seq", "cuda") == "bf16"
    with pytest.raises(ConfigError, match=r"quantize=int8 runs on the CPU only"):
        resolve_quantize("int8", "seq2seq", "cuda")


def test_int8_unavailable_fails_clearly(
    trained: Seq2SeqModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(q, "_INT8_CHECK", "RuntimeError: Didn't find engine for operation")
    with pytest.raises(ConfigError, match=r"quantize=int8: dynamic quantization does not run"):
        quantize_model(copy.deepcopy(trained), "int8")
    assert resolve_quantize("auto", "seq2seq", "cpu") == "none"  # auto falls back to fp32


def test_no_deprecation_warning_leaks(trained: Seq2SeqModule) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(copy.deepcopy(trained), "int8" if q.int8_available() else "bf16")


# -- GPT-2 -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    from dialoglab.data.hf_tokenization import HFTokenizer
    from dialoglab.models.causal_lm import CausalLMModule
    from tests.data.test_gpt2_tokenization import EXAMPLES

    tok = HFTokenizer(vocab_size=300, min_frequency=1).fit_examples(EXAMPLES * 3)
    torch.manual_seed(0)
    module = CausalLMModule(
        tok,
        functools.partial(torch.optim.AdamW, lr=1e-3),
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=128,
        dropout=0.0,
        max_reply_length=8,
    )
    return module.eval()


def gpt2_logits(module) -> torch.Tensor:
    batch = module.encode_prompts([["hello there, how are you?"]], None)
    with torch.no_grad():
        out = module.net(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"])
    return out.logits.float()


@pytest.mark.parametrize("mode", ["bf16", pytest.param("int8", marks=run_if(int8=True))])
def test_gpt2_replies_with_converted_weights(gpt2, mode: str) -> None:
    from transformers.pytorch_utils import Conv1D

    converted = accel.for_inference(copy.deepcopy(gpt2), mode)
    reference, approx = gpt2_logits(gpt2), gpt2_logits(converted)
    assert (approx - reference).abs().max() < 0.05 * reference.abs().max()
    if mode == "int8":  # HF's Conv1D projections became (quantized) Linear layers
        assert not any(isinstance(m, Conv1D) for m in converted.net.modules())
        attn = converted.net.transformer.h[0].attn.c_attn
        assert isinstance(attn, torch.ao.nn.quantized.dynamic.Linear)
    else:
        assert converted.net.transformer.h[0].attn.c_attn.weight.dtype == torch.bfloat16
    contexts = [["hello there, how are you?"]]
    for decoding in ("greedy", "beam"):
        assert len(converted.reply(contexts, decoding=decoding)) == 1
    assert converted.reply(contexts, decoding="greedy") == gpt2.reply(contexts, decoding="greedy")


def test_conv1d_to_linear_is_exact() -> None:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs
    torch.nn.init.normal_(conv.bias)
    holder = torch.nn.Sequential(conv)
    x = torch.randn(3, 5, 4)
    expected = conv(x)
    q.conv1d_to_linear(holder)
    assert isinstance(holder[0], torch.nn.Linear)
    torch.testing.assert_close(holder[0](x), expected)
