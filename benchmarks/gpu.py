"""On a GPU: the baselines where a GPU changes the answer (one row saying so without CUDA).

On the first CUDA device, each comparison timed call by call in turn: gru_attn's parallel step vs
the tutorial's loop at two batch sizes; GPT-2 124M-size from scratch (bf16): tokens/s and MFU,
eager and compiled; and DDP of one process vs the plain model (the wrapper `trainer=ddp` adds).
The helpers take a device, so the tests run them on the CPU at tiny sizes (gloo for DDP).
"""

from __future__ import annotations

import contextlib
import copy
import time
import traceback
from collections.abc import Callable, Iterator
from statistics import median

import torch
from torch import nn
from transformers import GPT2Config

from benchmarks.common import Figure, synchronized, time_calls, time_interleaved
from benchmarks.vs_tutorial import step_figures, step_times
from tests.helpers.workloads import GRUSize

# GPT-2 124M: 12 layers, 768 wide, 12 heads, GPT-2's vocabulary and context.
GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
BF16_PEAK = "GPU bf16 matmul peak"  # its row's value (TFLOP/s) is MFU's denominator


def matmul_tflops(device: torch.device, n: int, repeats: int) -> float:
    """Best TFLOP/s of a bf16 (n x n) @ (n x n) product on `device`."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / min(time_calls(synchronized(lambda: a @ b, device), repeats)) / 1e12


def gpt2_flops_per_token(config: GPT2Config) -> int:
    """Matmul FLOPs per trained token at full context (forward + backward = 3 x forward, a
    multiply-add as 2): per layer the four weight matrices (12 d^2 weights) and attention's two
    products over the context (as PaLM's MFU counts them), and the output layer (V d)."""
    d, L, T, V = config.n_embd, config.n_layer, config.n_positions, config.vocab_size
    return 3 * (2 * (L * 12 * d * d + V * d) + L * 2 * 2 * T * d)


def make_gpt2(config: GPT2Config, device: torch.device, attention: str = "sdpa") -> nn.Module:
    """A randomly initialised GPT-2 of `config`'s size, dropout off (timing), with train.py's
    default speed paths (`accel=auto`)."""
    from dialoglab import accel
    from dialoglab.models.components.gpt2 import SpecialIds, gpt2_from_scratch

    eos = config.vocab_size - 1
    model = gpt2_from_scratch(
        SpecialIds(config.vocab_size, eos, eos, eos),
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        n_positions=config.n_positions,
        dropout=0.0,
    )
    model.config._attn_implementation = attention
    return accel.for_training(model).to(device).train()


def gpt2_trainer(
    model: nn.Module, device: torch.device, bf16: bool
) -> Callable[[torch.Tensor], float]:
    """One AdamW training step of `model` (fused on CUDA) on a (B, T) batch of token ids."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")

    def step(ids: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


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
    (world size 1), and compiled when asked; with the first compiled step's seconds."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    base = make_gpt2(config, device)
    ids = torch.randint(0, config.vocab_size, (batch, config.n_positions), device=device)
    first_compiled = None
    with single_process_group(device):
        ids_of_device = [device.index or 0] if device.type == "cuda" else None
        ddp = DistributedDataParallel(copy.deepcopy(base), device_ids=ids_of_device)
        steps = {"eager": gpt2_trainer(base, device, bf16), "ddp": gpt2_trainer(ddp, device, bf16)}
        if compiled:
            steps["compiled"] = gpt2_trainer(torch.compile(copy.deepcopy(base)), device, bf16)
            start = time.perf_counter()
            synchronized(lambda: steps["compiled"](ids), device)()  # compilation included
            first_compiled = time.perf_counter() - start
        fns = {name: synchronized(lambda s=step: s(ids), device) for name, step in steps.items()}
        times = time_interleaved(fns, repeats=repeats, warmup=2)
    return times, first_compiled


def guarded(section: str, figures: Callable[[], list[Figure]]) -> list[Figure]:
    """`figures()`, or one row saying how `section` failed (traceback on stderr), so that one
    broken section still leaves the others' rows: a GPU lease is too short to rerun them."""
    try:
        return figures()
    except Exception as error:
        traceback.print_exc()
        return [Figure(f"GPU {section}", None, note=f"failed: {type(error).__name__}: {error}")]


def gru_figures(device: torch.device, quick: bool, batch_size: int) -> list[Figure]:
    """gru_attn at `batch_size`: the tutorial's loop, our step in fp32 and bf16, the speed-ups."""
    times = step_times(GRUSize.for_run(quick), batch_size, device, 5 if quick else 20)
    return step_figures(times, prefix=f"GPU gru_attn batch {batch_size}: ")


def gpt2_figures(device: torch.device, quick: bool, peak16: float | None) -> list[Figure]:
    """GPT-2 124M-size (tiny when quick): tokens/s and MFU, eager and compiled (CUDA only), and
    DDP of one process against the plain model."""
    cuda = device.type == "cuda"
    small = {"n_layer": 2, "n_embd": 128, "n_head": 2, "vocab_size": 8000, "n_positions": 128}
    config, batch = GPT2Config(**(small if quick else GPT2_124M)), 4 if quick else 16
    times, first = gpt2_step_times(config, batch, device, 5 if quick else 20, cuda, compiled=cuda)
    step = {k: median(v) for k, v in times.items()}
    per_token = gpt2_flops_per_token(config)
    shape = f"{config.n_layer} x {config.n_embd}, {batch} x {config.n_positions} tokens"
    figures = []
    for variant in [v for v in ("eager", "compiled") if v in step]:
        tokens_per_s = batch * config.n_positions / step[variant]
        name = f"GPU GPT-2 step ({variant})"
        figures.append(Figure(name, round(tokens_per_s), "tokens/s", note=shape))
        if peak16:
            mfu = round(100 * tokens_per_s * per_token / (peak16 * 1e12), 1)
            note = f"{per_token / 1e9:.2f} GFLOP/token / bf16 peak"
            figures.append(Figure(f"GPU GPT-2 MFU ({variant})", mfu, "%", note=note))
    if first is not None:
        figures.append(Figure("GPU GPT-2 first compiled step", round(first, 1), "s"))
    ddp = round(step["eager"] / step["ddp"], 3)
    figures.append(Figure("GPU GPT-2 DDP (1 GPU) / plain throughput", ddp, note="world size 1"))
    return figures


def run_on(device: torch.device, quick: bool) -> list[Figure]:
    """Every row, on `device` (CUDA for the benchmark; the tests use the CPU, without the
    compiled GPT-2 step). Each section runs guarded: a failure is a row, not the end."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    n, repeats = (256, 3) if quick else (8192, 10)
    figures = guarded(
        "matmul peak",
        lambda: [
            Figure(BF16_PEAK, round(matmul_tflops(device, n, repeats), 1), "TFLOP/s", note=name)
        ],
    )
    peak16 = next((f.value for f in figures if f.name == BF16_PEAK), None)  # None if it failed
    for batch_size in (GRUSize.for_run(quick).batch, 16 if quick else 512):
        section = f"gru_attn batch {batch_size}"
        figures += guarded(section, lambda b=batch_size: gru_figures(device, quick, b))
    figures += guarded("GPT-2", lambda: gpt2_figures(device, quick, peak16))
    return figures


def run(quick: bool = False) -> list[Figure]:
    if not torch.cuda.is_available():
        return [Figure("GPU benchmarks", None, note="no CUDA device here: skipped")]
    return run_on(torch.device("cuda", 0), quick)
