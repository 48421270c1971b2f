"""How a restored model holds its weights for inference: `quantize: auto | none | int8 | bf16`.

    model = quantize_model(restored.model, "int8")     # the chat front ends call this

- `none`: fp32, as trained. On the CPU every weight matrix of the network's Linear and GRU/LSTM
  layers is re-laid out in memory as its transpose's contiguous storage (`gemv_layout`): the
  same values, but batch-1 matrix-vector products stream them ~2x faster (10 vs 22 GB/s here)
  and a greedy gru_attn reply takes ~1.6x less time (p50 47 vs 75 ms); both measured by
  `python -m dialoglab.bench --only replies`. GPT-2's output layer, tied to the embedding in
  training, gets its own copy.
- `int8`: dynamic quantization (`torch.ao.quantization.quantize_dynamic`): the weights of every
  Linear and GRU/LSTM layer are stored as int8 and activations are quantized on the fly. CPU
  only. At batch 1, decoding reads every weight once per token and is bound by memory traffic,
  so 4x smaller weights are faster. gru_attn's GRUs then run as `Int8GRU` and its decoder's
  one-token steps as one C++ call each (`models/components/int8_gru.py`: the same int8
  weights, without torch.ao's per-op Python and cell-by-cell loops), so a reply (hidden 500,
  2+2 layers, vocabulary 8,000) takes greedy p50 9.0 ms on a slow day against 49.9 ms in fp32
  in the GEMV layout (`python -m dialoglab.bench --only replies`, 2 CPU cores). GPT-2's projections
  are Hugging Face `Conv1D` layers, not `nn.Linear`: they are first replaced by equal Linear
  layers so that they are quantized too (the embedding stays fp32; the output layer, tied to it
  in training, gets its own int8 copy). A 20-token GPT-2 scratch (4 x 256) reply through our search
  (`GPT2Stepper`) takes p50 23.1 vs 37.4 ms in fp32 (same command).
- `bf16`: the weights are cast to bfloat16 (half the memory and traffic: greedy p50 29-35 ms at
  batch 1 here, between fp32 and int8; same command). Decoding runs in bf16 and scores the logits in fp32.
- `auto`: `int8` on the CPU (when quantized kernels run here), `none` on GPUs. The default of
  chat, serve and the web app. Measured on trained checkpoints with
  `python -m dialoglab.bench.chat_latency ckpt_path=...` (share of replies word for word equal
  to fp32) and `python eval.py ckpt_path=... quantize=int8|none` (test BLEU): gru_attn (H=500,
  `experiment=quickstart`, best / last checkpoint) 100 / 88 % of greedy and 94 / 100 % of
  beam-5 replies, BLEU 52.62 -> 52.59 (best), greedy p50 2.0-3.0 ms, beam-5 9.1-11.5 ms;
  GPT-2 scratch (4 x 256, chatterbot, 8 epochs; our search) 14/16 greedy, 14/16 beam-5,
  BLEU 39.83 -> 39.81, ppl 15.49 -> 15.48.

Either changes the numbers slightly (an argmax can flip on a near tie). The model is changed in
place (its `.net` is replaced) and returned; `weights_of(model)` says what it holds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dialoglab.errors import ConfigError

QUANTIZE_CHOICES = ("auto", "none", "int8", "bf16")
KEY = "quantize"
FAMILIES = ("seq2seq", "causal_lm")  # the models whose `.net` can be converted


def resolve_quantize(value: Any, family: str, device: str | torch.device = "cpu") -> str:
    """`value` checked and `auto` resolved: one of none, int8, bf16 (errors name the `quantize` key)."""
    mode = "none" if value is None or value is False else value
    if not isinstance(mode, str) or mode.strip().lower() not in QUANTIZE_CHOICES:
        raise ConfigError(
            f"{KEY} must be one of {', '.join(QUANTIZE_CHOICES)} (auto: int8 on the CPU, none on "
            f"GPUs), got {value!r}"
        )
    mode = mode.strip().lower()
    on_cpu = torch.device(device).type == "cpu"
    if mode == "auto":
        return "int8" if family in FAMILIES and on_cpu and int8_available() else "none"
    if mode == "int8" and not on_cpu:
        raise ConfigError(
            f"{KEY}=int8 runs on the CPU only (dynamic quantization has no {torch.device(device).type} "
            f"kernels); use device=cpu, or {KEY}=bf16 / {KEY}=none on this device"
        )
    return mode


_INT8_CHECK: str | None = None  # "" when int8 kernels work here, else why not


def _int8_problem() -> str:
    global _INT8_CHECK
    if _INT8_CHECK is None:
        try:
            engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
            if not engines:
                raise RuntimeError("this PyTorch build has no quantized engine")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao quantization is deprecated (torchao)
                probe = torch.ao.quantization.quantize_dynamic(
                    nn.Sequential(nn.Linear(8, 8)), {nn.Linear}, dtype=torch.qint8
                )
                probe(torch.zeros(1, 8))
            _INT8_CHECK = ""
        except Exception as err:  # missing kernels on this CPU / build
            _INT8_CHECK = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return _INT8_CHECK


def int8_available() -> bool:
    """Whether dynamic int8 quantized kernels run on this machine (checked once)."""
    return not _int8_problem()


def _replace_layers(net: nn.Module, kind: type, convert: Callable[[Any], nn.Module]) -> nn.Module:
    """Replace every submodule of type `kind` by `convert(it)`, in place."""
    for name, child in list(net.named_children()):
        if isinstance(child, kind):
            setattr(net, name, convert(child))
        else:
            _replace_layers(child, kind, convert)
    return net


def conv1d_to_linear(net: nn.Module) -> nn.Module:
    """Replace every Hugging Face `Conv1D` (y = x W + b, W of shape (in, out)) by the equal
    `nn.Linear` (weight W^T), in place."""
    from transformers.pytorch_utils import Conv1D

    def to_linear(conv: Any) -> nn.Linear:
        n_in, n_out = conv.weight.shape
        linear = nn.Linear(n_in, n_out, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            linear.bias.copy_(conv.bias)
        return linear

    return _replace_layers(net, Conv1D, to_linear)


def column_major_to_linear(net: nn.Module) -> nn.Module:
    """Replace every `ColumnMajorLinear` (gru_attn's output layer) by the equal `nn.Linear`, in
    place: the layer type that dynamic quantization converts."""
    from dialoglab.models.components.column_major_linear import ColumnMajorLinear

    return _replace_layers(net, ColumnMajorLinear, ColumnMajorLinear.to_linear)


def _int8(net: nn.Module, family: str) -> nn.Module:
    problem = _int8_problem()
    if problem:
        raise ConfigError(
            f"{KEY}=int8: dynamic quantization does not run on this machine ({problem}; engine "
            f"{torch.backends.quantized.engine!r}, supported {torch.backends.quantized.supported_engines}); "
            f"use {KEY}=none or {KEY}=bf16"
        )
    if family == "causal_lm":
        conv1d_to_linear(net)
    column_major_to_linear(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao quantization is deprecated in favour of torchao
        net = torch.ao.quantization.quantize_dynamic(
            net, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8
        )
    from torch.ao.nn.quantized.dynamic import GRU as DynamicGRU

    from dialoglab.models.components.int8_gru import Int8DecoderStep, Int8GRU

    def faster(qgru: nn.Module) -> nn.Module:  # the same int8 weights, run faster
        return Int8GRU.from_quantized(qgru) if Int8GRU.supports(qgru) else qgru

    _replace_layers(net, DynamicGRU, faster)
    decoder = getattr(net, "decoder", None)  # gru_attn: its one-token steps in C++
    if family == "seq2seq" and decoder is not None and Int8DecoderStep.supports(decoder):
        decoder.step_kernel = Int8DecoderStep(decoder)
    return net


def quantize_model(model: Any, quantize: Any = "none", one_at_a_time: bool = True) -> Any:
    """Hold `model.net` (a Seq2SeqModule's or CausalLMModule's network) as `quantize` says.

    Call it after moving the model to its device and before replying; returns the model, in eval
    mode, with `model.inference_weights` set to what it holds (none, int8 or bf16).
    `one_at_a_time=False` (batched scoring, as eval does) skips `gemv_layout`, which only pays off
    for batch-1 decoding.
    """
    family = str(getattr(model, "family", "unknown"))
    device = getattr(model, "device", None) or torch.device("cpu")
    mode = resolve_quantize(quantize, family, device)
    if mode == "none":
        on_cpu = torch.device(device).type == "cpu"
        if one_at_a_time and on_cpu and isinstance(getattr(model, "net", None), nn.Module):
            gemv_layout(model.net)
    else:
        if not isinstance(getattr(model, "net", None), nn.Module):
            raise ConfigError(
                f"{KEY}={mode}: {type(model).__name__} has no `.net` network to convert; "
                f"use {KEY}=none"
            )
        if family not in FAMILIES:
            raise ConfigError(f"{KEY}={mode} is for gru_attn and GPT-2 models, not {family!r}")
        if mode == "int8":
            model.net = _int8(model.net, family)
        else:
            model.net.to(torch.bfloat16)
    model.eval()
    model.inference_weights = mode
    return model


def gemv_layout(net: nn.Module) -> nn.Module:
    """Store each 2-D weight of `net`'s Linear/GRU/LSTM layers as the transpose of a contiguous
    (in, out) matrix, in place: equal values, faster batch-1 decoding on the CPU (inference only;
    tied weights are untied)."""
    for module in net.modules():
        if isinstance(module, nn.Linear) or type(module) in (nn.GRU, nn.LSTM):
            for name, weight in list(module.named_parameters(recurse=False)):
                if weight.dim() == 2 and weight.is_contiguous():
                    relaid = weight.detach().t().contiguous().t()  # (out, in) view of (in, out)
                    setattr(module, name, nn.Parameter(relaid, requires_grad=False))
    return net


def weights_of(model: Any) -> str:
    """What `quantize_model` made of the model's weights: none (fp32), int8 or bf16."""
    return str(getattr(model, "inference_weights", "none"))
