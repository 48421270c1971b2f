"""GPT-2 scratch training step: our defaults vs each of them undone, one at a time.

Copies of the same initial model (conf/model/gpt2_scratch.yaml's size) train on the same batches
with the same optimizer and clipping, their steps timed call by call in turn after warm-up:

- `default`: `CausalLMModule` as configured by default;
- `gelu_new`: `activation=gelu_new`, Hugging Face GPT-2's activation (eight elementwise ops)
  instead of the same formula as one fused op (`gelu_pytorch_tanh`);
- `full_logits`: the loss from the logits at every position (`full_logits_nll`, what
  `GPT2LMHeadModel(labels=...)` does) instead of the output layer on the labelled positions only,
  fused with the loss (`CausalLMModule.nll`, `linear_cross_entropy`); half of each benchmark
  row is labelled, the "reply";
- `torch_dropout`: `fast_dropout=false`, PyTorch's dropout (`bernoulli_` masks, and SDPA's math
  kernel for the attention weights) instead of ours (`models/components/gpt2_dropout.py`).
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import torch
from torch.nn import functional as F

from dialoglab.bench.common import Figure, median, set_seed, time_interleaved
from dialoglab.bench.lightning_overhead import (
    make_batches,
    make_module,
    optimizer_of,
    scratch_size,
    train_step,
)
from dialoglab.data.hf_tokenization import IGNORE_INDEX

UNDONE = {
    "gelu_new": ("activation gelu_new", "fused GELU (gelu_pytorch_tanh)"),
    "full_logits": (
        "output layer at every position",
        "output layer on labelled positions only, fused with the loss",
    ),
    "torch_dropout": ("PyTorch's dropout", "our dropout masks (fast_dropout)"),
}


def full_logits_nll(module: Any, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    """A causal LM's summed reply loss from its logits at every position (unlabelled: -100)."""
    logits = module(batch)[:, :-1]
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def run(quick: bool = False) -> list[Figure]:
    size = scratch_size(quick)
    batch, length = (4, 32) if quick else (16, 128)
    repeats, warmup = (2, 1) if quick else (8, 2)
    batches = make_batches(4, batch, length, size["vocab_size"])
    set_seed(0)
    default, _ = make_module(size, length)
    sides = {"default": default}
    for name, options in (
        ("gelu_new", {"activation": "gelu_new"}),
        ("full_logits", {}),
        ("torch_dropout", {"fast_dropout": False}),
    ):
        sides[name], _ = make_module(size, length, **options)
        sides[name].load_state_dict(default.state_dict())
    sides["full_logits"].nll = types.MethodType(full_logits_nll, sides["full_logits"])
    optimizers = {name: optimizer_of(module.train()) for name, module in sides.items()}
    feeds = {name: itertools.cycle(batches) for name in sides}  # each side: the same sequence

    def step(name: str) -> None:
        train_step(sides[name], optimizers[name], next(feeds[name]), 50.0)

    times = time_interleaved(
        {name: (lambda name=name: step(name)) for name in sides}, repeats=repeats, warmup=warmup
    )
    tokens = batch * length
    steps = {name: median(t) for name, t in times.items()}
    what = (
        f"{size['n_layer']} layers, {size['n_embd']} wide, vocab {size['vocab_size']}; batch "
        f"{batch} x {length} tokens, fp32, dropout 0.1; median of {repeats} steps a side"
    )
    figures = [
        Figure(
            "GPT-2 scratch step, defaults", round(tokens / steps["default"]), "tokens/s", note=what
        )
    ]
    for name, (undone, kept) in UNDONE.items():
        figures += [
            Figure(f"GPT-2 scratch step, {undone}", round(tokens / steps[name]), "tokens/s"),
            Figure(f"{kept}: speed-up (step)", round(steps[name] / steps["default"], 3), "x"),
        ]
    return figures
