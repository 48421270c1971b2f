"""Optional speed paths behind one seam, switched by the `accel` config group.

The models (`dialoglab.models`) are plain PyTorch and never import this package. It plugs in at
two places: `for_training(net, settings)` after the network is built (experiment/train.py) and
`for_inference(model, quantize, settings)` after a checkpoint is restored (eval, chat, web, API).
Each path swaps a reference module's class for a faster subclass that keeps its parameters
(state_dict keys unchanged), the way Hugging Face picks an attention class from a registry;
the subclass falls back to the reference maths wherever it does not apply.

`accel=auto` (conf/accel/auto.yaml, the default) turns every path on; `accel=none` turns them
off, so only PyTorch runs and nothing is compiled. docs/speed.md says what each path saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from dialoglab.accel.swap import swap
from dialoglab.errors import ConfigError


@dataclass(frozen=True)
class AccelConfig:
    """Which speed paths run (`accel.<name>` in the config)."""

    fused_gru: bool = True  # CPU GRU layers as one autograd node each (C++ loops when built)
    sdpa_without_cudnn: bool = True  # GPT-2 on CUDA: no cuDNN attention plan per new shape

    @classmethod
    def from_any(cls, value: Any = None) -> AccelConfig:
        """From a mapping (a Hydra node), an AccelConfig or None (every path on)."""
        if value is None or isinstance(value, AccelConfig):
            return value or cls()
        values = dict(value) if isinstance(value, Mapping) else None
        for retired in RETIRED & set(values or {}):  # a saved run's config from before
            del values[retired]
        known = {field.name for field in dataclasses.fields(cls)}
        if values is None or set(values) - known:
            unknown = sorted(set(values or {}) - known) or [repr(value)]
            raise ConfigError(
                f"accel: unknown setting(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(known))} (or pick accel=auto / accel=none)"
            )
        for key, setting in values.items():
            if not isinstance(setting, bool):
                raise ConfigError(f"accel.{key} must be true or false, got {setting!r}")
        return cls(**values)


RETIRED = {"keep_freed_memory", "int8_kernels"}  # settings of removed paths, accepted and ignored
NONE = AccelConfig(**{field.name: False for field in dataclasses.fields(AccelConfig)})


def _training_swaps() -> dict[str, dict[type, type]]:
    """path name -> {reference class: faster subclass}."""
    from dialoglab.accel import gru_attn as fast
    from dialoglab.models.components import gru_attn as ref

    return {
        "fused_gru": {ref.Encoder: fast.FusedGRUEncoder, ref.Decoder: fast.FusedGRUDecoder},
    }


def for_training(net: nn.Module, settings: Any = None) -> nn.Module:
    """Swap in the training speed paths `settings` enables, in place; returns `net`."""
    settings = AccelConfig.from_any(settings)
    if settings.sdpa_without_cudnn and hasattr(net, "transformer"):  # a Hugging Face GPT-2
        from dialoglab.accel.gpt2_attention import use_sdpa_without_cudnn

        use_sdpa_without_cudnn(net)
    for name, table in _training_swaps().items():
        if getattr(settings, name):
            for module in net.modules():
                for reference, faster in table.items():
                    if isinstance(module, reference):
                        swap(module, faster)
    return net


def for_inference(model: Any, quantize: Any = "auto", settings: Any = None) -> Any:
    """Hold a restored model's weights as `quantize` says (`models.quantize`), then swap in the
    speed paths `settings` enables (the training ones: fp32 GRUs still run fused; torch.ao's
    int8 layers are left as they are). Returns the model, in eval mode."""
    from dialoglab.models.quantize import quantize_model

    settings = AccelConfig.from_any(settings)
    model = quantize_model(model, quantize)
    net = getattr(model, "net", None)
    if isinstance(net, nn.Module):
        for_training(net, settings)
    return model
