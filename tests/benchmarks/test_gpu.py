"""benchmarks/gpu.py's helpers (and the gru_attn step timing it shares with vs_tutorial.py), run
on the CPU at tiny sizes (the benchmark itself needs CUDA)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config

from benchmarks import gpu
from benchmarks.vs_tutorial import step_times
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from tests.helpers import workloads
from tests.helpers.workloads import GRUSize

CPU = torch.device("cpu")
TINY = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
BATCH = 2


def test_gpt2_flops_per_token_is_what_a_training_step_multiplies():
    torch.manual_seed(0)
    model = gpu.make_gpt2(TINY, CPU, attention="eager")  # attention as products, recordable
    step = gpu.gpt2_trainer(model, CPU, bf16=False)
    ids = torch.randint(0, TINY.vocab_size, (BATCH, TINY.n_positions))
    with FlopCounterMode(display=False) as counter:
        step(ids)
    tokens = BATCH * TINY.n_positions
    assert counter.get_total_flops() == gpu.gpt2_flops_per_token(TINY) * tokens


def test_ddp_of_one_process_trains_exactly_like_the_plain_model():
    torch.manual_seed(0)
    plain = gpu.make_gpt2(TINY, CPU)
    ids = torch.randint(0, TINY.vocab_size, (BATCH, TINY.n_positions))
    with gpu.single_process_group(CPU):
        wrapped = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(plain))
        steps = gpu.gpt2_trainer(plain, CPU, bf16=False), gpu.gpt2_trainer(wrapped, CPU, False)
        for _ in range(3):
            losses = [step(ids) for step in steps]
            assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(plain.parameters(), wrapped.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gpt2_step_times_cover_eager_and_ddp():
    times, first_compiled = gpu.gpt2_step_times(TINY, BATCH, CPU, 2, bf16=False, compiled=False)
    assert set(times) == {"eager", "ddp"} and first_compiled is None
    assert all(len(ts) == 2 and min(ts) > 0 for ts in times.values())


def test_gru_steps_time_the_tutorial_loop_and_ours():
    times = step_times(GRUSize.for_run(quick=True), 4, CPU, repeats=2)
    assert set(times) == {"tutorial", "fp32", "bf16"} and min(times.values()) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_without_cuda_the_benchmark_says_it_skipped():
    (figure,) = gpu.run(quick=True)
    assert figure.value is None and "no CUDA device" in figure.note


def test_every_figure_is_built_on_the_cpu_at_quick_sizes():
    figures = {figure.name: figure for figure in gpu.run_on(CPU, quick=True)}
    assert figures["GPU bf16 matmul peak"].value > 0
    assert figures["GPU gru_attn batch 8: speed-up over the tutorial step, fp32"].value > 0
    assert figures["GPU gru_attn batch 16: our step bf16"].value > 0
    assert figures["GPU GPT-2 MFU (eager)"].value > 0
    assert "GPU GPT-2 MFU (compiled)" not in figures  # compiled on CUDA only
    assert figures["GPU GPT-2 DDP (1 GPU) / plain throughput"].value > 0


def test_a_failing_section_is_a_row_and_the_others_still_run(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu, "gru_figures", broken)
    monkeypatch.setattr(
        gpu, "gpt2_figures", lambda device, quick, peak16: [gpu.Figure("x", peak16)]
    )
    figures = gpu.run_on(CPU, quick=True)
    failed = [f for f in figures if f.note.startswith("failed")]
    assert [f.name for f in failed] == ["GPU gru_attn batch 8", "GPU gru_attn batch 16"]
    assert all("RuntimeError: CUDA error: out of memory" in f.note for f in failed)
    assert "Traceback" in capsys.readouterr().err
    peak = next(f for f in figures if f.name == "GPU bf16 matmul peak")
    gpt2 = next(f for f in figures if f.name == "x")
    assert gpt2.value == pytest.approx(peak.value, abs=0.05)  # GPT-2 got the bf16 peak


def test_our_step_bf16_autocast_reaches_the_forward():
    size = GRUSize.for_run(quick=True)
    net = GRUAttnSeq2Seq(size.config()).train()
    batch = workloads.synthetic_batch(size.vocab, 4, size.length, size.length)
    optimizer = workloads.make_optimizer(net)
    seen = []

    def forward(net, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return workloads.token_nll(net, batch)

    for bf16 in (True, False):
        workloads.our_step(net, optimizer, batch, bf16=bf16, forward=forward)
    assert seen == [torch.bfloat16, None]


def test_our_step_autocasts_on_the_device_the_network_reports(monkeypatch):
    """The device type comes from the network (CUDA here, without a GPU: only the embedding's
    device is read), not the CPU's, which made the GPU bench's "bf16" step an fp32 one."""
    import contextlib
    from types import SimpleNamespace

    class CudaLooking(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))
            self.config = SimpleNamespace(pad_id=0)
            self.embedding = SimpleNamespace(weight=SimpleNamespace(device=torch.device("cuda")))

    seen = []
    monkeypatch.setattr(
        workloads,
        "autocast",
        lambda bf16, dev: seen.append((bf16, dev)) or contextlib.nullcontext(),
    )
    net = CudaLooking()
    batch = {"target": torch.tensor([[1, 2, 0]])}
    optimizer = torch.optim.Adam(net.parameters())
    workloads.our_step(net, optimizer, batch, bf16=True, forward=lambda net, batch: net.w.sum())
    assert seen == [(True, "cuda")]
