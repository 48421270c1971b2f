"""torch.compile on the CPU: GPT-2 scratch training with `model.compile=true` vs eager.

`CausalLMModule(compile=True)` compiles its network when fitting starts (`on_fit_start`). Two
copies of the same initial model (conf/model/gpt2_scratch.yaml's size) train on the same batches,
one eager and one compiled through that very hook: the first compiled step (which compiles) is
timed on its own, then the two sides' steps call by call in turn, after warm-up.
"""

from __future__ import annotations

import itertools
import time

from benchmarks.common import Figure, median, set_seed, time_interleaved
from benchmarks.lightning_overhead import (
    make_batches,
    make_module,
    optimizer_of,
    scratch_size,
    train_step,
)


def run(quick: bool = False) -> list[Figure]:
    size = scratch_size(quick)
    batch, length = (4, 32) if quick else (16, 128)
    repeats, warmup = (2, 1) if quick else (8, 2)
    batches = make_batches(4, batch, length, size["vocab_size"])
    set_seed(0)
    eager = make_module(size, length)
    compiled = make_module(size, length, compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.on_fit_start()  # what the Trainer calls before the first step: compiles the net
    sides = {"eager": eager.train(), "compiled": compiled.train()}
    optimizers = {name: optimizer_of(module) for name, module in sides.items()}
    feeds = {name: itertools.cycle(batches) for name in sides}  # each side: the same sequence

    def step(name: str) -> None:
        train_step(sides[name], optimizers[name], next(feeds[name]), 50.0)

    start = time.perf_counter()
    step("compiled")  # traces and compiles forward + backward
    first_step = time.perf_counter() - start
    next(feeds["eager"])  # both sides at the same point of the batch sequence
    times = time_interleaved(
        {name: (lambda name=name: step(name)) for name in sides}, repeats=repeats, warmup=warmup
    )
    tokens = batch * length
    eager_step, compiled_step = median(times["eager"]), median(times["compiled"])
    what = (
        f"{size['n_layer']} layers, {size['n_embd']} wide, vocab {size['vocab_size']}; batch "
        f"{batch} x {length} tokens, fp32; median of {repeats} steps a side"
    )
    return [
        Figure("GPT-2 scratch step, eager", round(tokens / eager_step), "tokens/s", note=what),
        Figure("GPT-2 scratch step, model.compile=true", round(tokens / compiled_step), "tokens/s"),
        Figure("torch.compile speed-up (step)", round(eager_step / compiled_step, 3), "x"),
        Figure(
            "torch.compile: first compiled step",
            round(first_step, 1),
            "s",
            note="tracing + compilation of forward and backward, once per run",
        ),
    ]
