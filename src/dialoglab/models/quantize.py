"""How a restored model holds its weights for inference: `quantize: auto | none | int8 | bf16`.

    model = quantize_model(restored.model, "int8")   # accel.for_inference calls this

- `none`: fp32, as trained.
- `int8`: dynamic quantization (`torch.ao.quantization.quantize_dynamic`): the weights of every
  Linear and GRU/LSTM layer are stored as int8 and activations are quantized on the fly; CPU
  only. At batch 1 decoding reads every weight once per token and is bound by memory traffic,
  so 4x smaller weights are faster. GPT-2's projections are Hugging Face `Conv1D` layers, so
  they are first replaced by equal Linear layers (the output layer, tied to the embedding in
  training, gets its own int8 copy).
- `bf16`: the weights cast to bfloat16; decoding scores the logits in fp32.
- `auto`: `int8` on the CPU (where quantized kernels run), `none` on GPUs: the default of chat,
  serve and the web app.

int8 and bf16 change the numbers slightly (an argmax can flip on a near tie). The model is
changed in place (its `.net` is replaced) and returned; `weights_of(model)` says what it holds.
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao quantization is deprecated in favour of torchao
        net = torch.ao.quantization.quantize_dynamic(
            net, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8
        )
    return net


def quantize_model(model: Any, quantize: Any = "none") -> Any:
    """Hold `model.net` (a Seq2SeqModule's or CausalLMModule's network) as `quantize` says.

    Call it after moving the model to its device and before replying; returns the model, in eval
    mode, with `model.inference_weights` set to what it holds (none, int8 or bf16).
    """
    family = str(getattr(model, "family", "unknown"))
    device = getattr(model, "device", None) or torch.device("cpu")
    mode = resolve_quantize(quantize, family, device)
    if mode != "none":
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


def weights_of(model: Any) -> str:
    """What `quantize_model` made of the model's weights: none (fp32), int8 or bf16."""
    return str(getattr(model, "inference_weights", "none"))
