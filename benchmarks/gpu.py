"""8. On a GPU: the suite's questions where a GPU changes the answer (skipped without CUDA).

In one process on the first CUDA device, each comparison timed call by call in turn, every call
bracketed by torch.cuda.synchronize():

- the dense-matmul peak measured here: bf16, and fp32 with TF32 off and on;
- gru_attn (the utilisation workload: hidden 500, 2+2 layers, vocab 8000, length 10) on cuDNN:
  our parallel teacher-forced step vs the tutorial's per-time-step decoder loop
  (`tutorial_baseline.py`, the same weights), fp32 and bf16 autocast, at batch 64 and 512;
- GPT-2 124M-size from scratch (12 layers, 768 wide, 12 heads, vocab 50257, 1024 positions),
  bf16 autocast, fused AdamW: tokens/s and MFU (`gpt2_flops_per_token` against the bf16 peak
  measured above), eager and torch.compile'd;
- DDP on one GPU: the same GPT-2 step inside DistributedDataParallel (NCCL, world size 1, the
  wrapper `trainer.strategy=ddp` puts around the model) vs without;
- model=gpt2_scratch's size (dropout 0.1) on padded batches of a new length every step, as
  dialogue batches come: our GPT-2 attention (SDPA with cuDNN's backend kept out) vs torch's
  backend choice.

The helpers take a device, so the tests run them on the CPU at tiny sizes (gloo for DDP).
"""

from __future__ import annotations

import contextlib
import copy
import time
import traceback
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers import GPT2Config

from dialoglab.bench.common import (
    Figure,
    median,
    set_seed,
    synchronized,
    time_interleaved,
)
from dialoglab.bench.tutorial_baseline import TutorialTrainer, tutorial_batch
from dialoglab.bench.utilisation import matmul_gflops
from dialoglab.bench.workloads import GRUSize, make_optimizer, our_step, synthetic_batch
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq, count_flops_per_step


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best TFLOP/s of an (n x n) @ (n x n) product on `device` (utilisation's timing)."""
    return matmul_gflops(dtype, n, repeats, device=device) / 1e3


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 tensor-core products for fp32 matmuls inside the block (torch's default: off)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


# -----------------------------------------------------------------------------
# gru_attn: our step vs the tutorial's loop


def gru_step_times(
    size: GRUSize, batch_size: int, device: torch.device, repeats: int
) -> dict[str, list[float]]:
    """Seconds per training step at `batch_size`: the tutorial's loop (fp32) and ours in fp32 and
    under bf16 autocast, the same initial weights and batch, interleaved."""
    set_seed(0)
    base = GRUAttnSeq2Seq(size.config()).to(device).train()
    batch = {
        k: v.to(device)
        for k, v in synthetic_batch(size.vocab, batch_size, size.length, size.length).items()
    }
    tutorial = TutorialTrainer(copy.deepcopy(base))
    tut_batch = tutorial_batch(batch, base.config.pad_id)
    nets = {name: copy.deepcopy(base) for name in ("ours_fp32", "ours_bf16")}
    optimizers = {name: make_optimizer(net) for name, net in nets.items()}
    autocast = device.type == "cuda"  # bf16 autocast on the CPU is the utilisation bench's

    def ours(name: str) -> None:
        our_step(nets[name], optimizers[name], batch, bf16=name == "ours_bf16" and autocast)

    return time_interleaved(
        {
            "tutorial": synchronized(lambda: tutorial.step(tut_batch), device),
            **{name: synchronized(lambda name=name: ours(name), device) for name in nets},
        },
        repeats=repeats,
        warmup=2,
    )


# -----------------------------------------------------------------------------
# GPT-2: tokens/s, MFU, DDP


# GPT-2 124M: 12 layers, 768 wide, 12 heads, GPT-2's vocabulary and context.
GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}


def gpt2_flops_per_token(config: GPT2Config) -> int:
    """Matmul FLOPs per trained token at full context (forward + backward = 3 x forward, a
    multiply-add as 2): per layer the four weight matrices (12 d^2 weights) and attention's two
    products over the context (q k^T and weights @ v, over all T positions, as PaLM's MFU counts
    them), and the output layer (V d)."""
    d, L, T, V = config.n_embd, config.n_layer, config.n_positions, config.vocab_size
    forward = 2 * (L * 12 * d * d + V * d) + L * 2 * 2 * T * d
    return 3 * forward


def make_gpt2(
    config: GPT2Config, device: torch.device, attention: str = "sdpa", dropout: float = 0.0
) -> nn.Module:
    """A randomly initialised GPT-2 of `config`'s size, dropout off unless asked (timing)."""
    from dialoglab.models.components.gpt2 import SpecialIds, gpt2_from_scratch

    eos = config.vocab_size - 1
    model = gpt2_from_scratch(
        SpecialIds(config.vocab_size, eos, eos, eos),
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        n_positions=config.n_positions,
        dropout=dropout,
    )
    model.config._attn_implementation = attention
    return model.to(device).train()


def gpt2_trainer(
    model: nn.Module, device: torch.device, bf16: bool
) -> Callable[[torch.Tensor | dict[str, torch.Tensor]], float]:
    """One AdamW training step of `model` (fused on CUDA) on a (B, T) batch of token ids, or on
    a dict of model inputs with labels (`padded_batch`)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")

    def step(batch: torch.Tensor | dict[str, torch.Tensor]) -> float:
        optimizer.zero_grad(set_to_none=True)
        inputs = batch if isinstance(batch, dict) else {"input_ids": batch, "labels": batch}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# model=gpt2_scratch's size, and the lengths of its chatterbot batches (prompt + reply, padded)
GPT2_SCRATCH = {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 3376, "n_positions": 256}
DIALOGUE_LENGTHS = tuple(range(24, 129, 4))  # 27 lengths: a new one every step


def padded_batch(
    vocab: int, rows: int, length: int, device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """Right-padded token ids (rows, length) with their attention mask and labels (-100 on
    padding): the longest row fills `length`, the others are shorter, as in a dialogue batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    batch = {
        "input_ids": ids,
        "attention_mask": mask.long(),
        "labels": ids.masked_fill(~mask, -100),
    }
    return {k: v.to(device) for k, v in batch.items()}


def dialogue_step_times(
    config: GPT2Config,
    rows: int,
    lengths: tuple[int, ...],
    device: torch.device,
    bf16: bool,
) -> dict[str, list[float]]:
    """Seconds per training step (dropout 0.1, AdamW) on padded batches of a new length each
    step, as train.py's dialogue batches come: GPT-2's attention through dialoglab's SDPA
    (`gpt2_dropout`: cuDNN's backend kept out on CUDA) vs Hugging Face's SDPA (torch's choice of
    backend). Both see each length for the first time in the same round (`time_interleaved`);
    one untimed step at another length first."""
    from dialoglab.models.components.gpt2_dropout import use_fast_dropout

    set_seed(0)
    base = make_gpt2(config, device, dropout=0.1)
    models = {"dialoglab SDPA": use_fast_dropout(copy.deepcopy(base)), "torch's SDPA": base}
    warm = padded_batch(config.vocab_size, rows, lengths[0] - 2, device, seed=0)
    batches = [warm, *(padded_batch(config.vocab_size, rows, n, device, seed=n) for n in lengths)]

    def contender(model: nn.Module) -> Callable[[], None]:
        """Each call trains on the next batch: the warm-up one, then one per length."""
        step, queue = gpt2_trainer(model, device, bf16), iter(batches)
        return synchronized(lambda: step(next(queue)), device)

    fns = {name: contender(model) for name, model in models.items()}
    return time_interleaved(fns, repeats=len(lengths), warmup=1)


@contextlib.contextmanager
def single_process_group(device: torch.device) -> Iterator[None]:
    """A torch.distributed group of this process alone (NCCL on CUDA, gloo on the CPU), met
    through an in-process store (no port)."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def gpt2_step_times(
    config: GPT2Config, batch: int, device: torch.device, repeats: int, bf16: bool, compiled: bool
) -> tuple[dict[str, list[float]], float | None]:
    """Seconds per GPT-2 step on (batch, n_positions) token ids, interleaved: eager, inside DDP
    (world size 1), and compiled when asked; with the first compiled step's seconds
    (compilation included)."""
    from torch.nn.parallel import DistributedDataParallel

    set_seed(0)
    base = make_gpt2(config, device)
    ids = torch.randint(0, config.vocab_size, (batch, config.n_positions), device=device)
    with single_process_group(device):
        ddp = DistributedDataParallel(
            copy.deepcopy(base), device_ids=[device.index or 0] if device.type == "cuda" else None
        )
        steps = {"eager": gpt2_trainer(base, device, bf16), "ddp": gpt2_trainer(ddp, device, bf16)}
        first_compiled = None
        if compiled:
            compiled_model = torch.compile(copy.deepcopy(base))
            steps["compiled"] = gpt2_trainer(compiled_model, device, bf16)
            start = time.perf_counter()
            synchronized(lambda: steps["compiled"](ids), device)()  # compilation included
            first_compiled = time.perf_counter() - start
        times = time_interleaved(
            {
                name: synchronized(lambda step=step: step(ids), device)
                for name, step in steps.items()
            },
            repeats=repeats,
            warmup=2,
        )
    return times, first_compiled


# -----------------------------------------------------------------------------
# The benchmark


def run(quick: bool = False) -> list[Figure]:
    if not torch.cuda.is_available():
        return [Figure("GPU benchmarks", None, note="no CUDA device here: skipped")]
    return run_on(torch.device("cuda", 0), quick)


def guarded(section: str, figures: Callable[[], list[Figure]]) -> list[Figure]:
    """`figures()`, or one row saying how `section` failed (traceback on stderr), so that one
    broken section still leaves the others' figures: a GPU lease is too short to rerun them."""
    try:
        return figures()
    except Exception as error:
        traceback.print_exc()
        return [Figure(f"GPU {section}", None, note=f"failed: {type(error).__name__}: {error}")]


BF16_PEAK = "GPU bf16 matmul peak"  # its row's value (TFLOP/s) is MFU's denominator


def peak_figures(device: torch.device, quick: bool, name: str) -> list[Figure]:
    """The bf16, fp32 and TF32 matmul peaks."""
    n, repeats = (1024, 3) if quick else (8192, 10)
    peak16 = matmul_tflops(device, torch.bfloat16, n, repeats)
    with tf32(False):
        peak32 = matmul_tflops(device, torch.float32, n, repeats)
    with tf32(True):
        peak_tf32 = matmul_tflops(device, torch.float32, n, repeats)
    return [
        Figure(BF16_PEAK, round(peak16, 1), "TFLOP/s", note=f"{name}, n={n}"),
        Figure("GPU fp32 matmul peak (TF32 off)", round(peak32, 1), "TFLOP/s"),
        Figure("GPU fp32 matmul peak (TF32 on)", round(peak_tf32, 1), "TFLOP/s"),
    ]


def milliseconds(name: str, seconds: float) -> Figure:
    """A step time row, in ms to 0.01."""
    return Figure(name, round(seconds * 1e3, 2), "ms")


def speedup(
    name: str, step: dict[str, float], slow: str, fast: str, digits: int = 1, note: str = ""
) -> Figure:
    """How many times faster `step[fast]` is than `step[slow]` (seconds)."""
    return Figure(name, round(step[slow] / step[fast], digits), "x", note=note)


def gru_figures(device: torch.device, quick: bool, batch_size: int) -> list[Figure]:
    """gru_attn at `batch_size`: the tutorial's loop, our step in fp32 and bf16, the speed-ups."""
    size = GRUSize.for_run(quick)
    times = gru_step_times(size, batch_size, device, repeats=5 if quick else 20)
    step = {k: median(v) for k, v in times.items()}
    flops = count_flops_per_step(size.config(), batch_size, size.length, size.length)
    label = f"GPU gru_attn batch {batch_size}"
    return [
        milliseconds(f"{label}: tutorial step loop (fp32)", step["tutorial"]),
        milliseconds(f"{label}: our step fp32", step["ours_fp32"]),
        milliseconds(f"{label}: our step bf16-autocast", step["ours_bf16"]),
        speedup(f"{label}: speed-up over the tutorial step, fp32", step, "tutorial", "ours_fp32"),
        speedup(
            f"{label}: speed-up over the tutorial step, bf16-autocast",
            step,
            "tutorial",
            "ours_bf16",
            note=f"our bf16 step {flops / step['ours_bf16'] / 1e12:.2f} TFLOP/s "
            "(count_flops_per_step; cuDNN also runs the zero-state products it leaves out)",
        ),
    ]


def gpt2_figures(device: torch.device, quick: bool, peak16: float | None) -> list[Figure]:
    """GPT-2 124M-size (tiny when quick): tokens/s and MFU, eager and compiled (CUDA only), and
    DDP of one process against the plain model."""
    cuda = device.type == "cuda"
    small = {"n_layer": 2, "n_embd": 128, "n_head": 2, "vocab_size": 8000, "n_positions": 128}
    gpt2, batch = GPT2Config(**(small if quick else GPT2_124M)), 4 if quick else 16
    times, first = gpt2_step_times(gpt2, batch, device, 5 if quick else 20, cuda, compiled=cuda)
    step = {k: median(v) for k, v in times.items()}
    per_token = gpt2_flops_per_token(gpt2)
    precision = "bf16 autocast" if cuda else "fp32"
    shape = f"{gpt2.n_layer} x {gpt2.n_embd}, {batch} x {gpt2.n_positions} tokens, {precision}"
    figures = []
    for variant in [v for v in ("eager", "compiled") if v in step]:
        tokens_per_s = batch * gpt2.n_positions / step[variant]
        figures.append(
            Figure(f"GPU GPT-2 step ({variant})", round(tokens_per_s), "tokens/s", note=shape)
        )
        if peak16:
            figures.append(
                Figure(
                    f"GPU GPT-2 MFU ({variant})",
                    round(100 * tokens_per_s * per_token / (peak16 * 1e12), 1),
                    "%",
                    note=f"{per_token / 1e9:.2f} GFLOP/token (gpt2_flops_per_token) / bf16 peak",
                )
            )
    if first is not None:
        figures.append(Figure("GPU GPT-2 first compiled step", round(first, 1), "s"))
    figures.append(
        Figure(
            "GPU GPT-2 DDP (1 GPU, NCCL) / plain throughput",
            round(step["eager"] / step["ddp"], 3),
            note="DistributedDataParallel around the same model, world size 1",
        )
    )
    return figures


def dialogue_figures(device: torch.device, quick: bool) -> list[Figure]:
    """model=gpt2_scratch's size on batches of a new padded length each step: dialoglab's SDPA
    against torch's backend choice (on Hopper, cuDNN's attention builds a plan per shape)."""
    small = {"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300, "n_positions": 64}
    config = GPT2Config(**(small if quick else GPT2_SCRATCH))
    lengths = (12, 16, 20) if quick else DIALOGUE_LENGTHS
    rows = 4 if quick else 32
    times = dialogue_step_times(config, rows, lengths, device, bf16=device.type == "cuda")
    step = {k: median(v) for k, v in times.items()}
    label = (
        f"GPU GPT-2 {config.n_layer} x {config.n_embd}, {rows} rows of a new padded length "
        f"each step ({lengths[0]}-{lengths[-1]})"
    )
    return [
        milliseconds(f"{label}: dialoglab's SDPA", step["dialoglab SDPA"]),
        milliseconds(f"{label}: torch's SDPA backend choice", step["torch's SDPA"]),
        speedup(
            f"{label}: speed-up of dialoglab's SDPA",
            step,
            "torch's SDPA",
            "dialoglab SDPA",
            digits=2,
            note="median step; dropout 0.1; cuDNN's attention kept out (models/components/"
            "gpt2_dropout.py)",
        ),
    ]


def run_on(device: torch.device, quick: bool) -> list[Figure]:
    """Every figure, on `device` (CUDA for the benchmark; the tests use the CPU, without the
    compiled GPT-2 step). Each section runs guarded: a failure is a row, not the end."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    figures = guarded("matmul peaks", lambda: peak_figures(device, quick, name))
    peak16 = next((f.value for f in figures if f.name == BF16_PEAK), None)  # None if it failed
    for batch_size in (GRUSize.for_run(quick).batch, 16 if quick else 512):
        figures += guarded(
            f"gru_attn batch {batch_size}", lambda b=batch_size: gru_figures(device, quick, b)
        )
    figures += guarded("GPT-2", lambda: gpt2_figures(device, quick, peak16))
    figures += guarded("GPT-2 dialogue batches", lambda: dialogue_figures(device, quick))
    return figures
