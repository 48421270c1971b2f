"""1. Utilisation: dense-matmul peak (fp32, bf16) and the gru_attn training step's achieved FLOP/s.

The step's FLOPs are counted analytically (`count_flops_per_step`: matmuls only, forward +
backward = 3 x forward) for a full-length batch (hidden 500, 2+2 layers, batch 64, vocab 8000,
source and target length 10). Peak is the best of square matmuls of a few sizes, measured in this
same process before and after the step timings, so both see the same machine load. In fp32 it
is measured twice, through torch.mm (MKL's sgemm, the issue's "plain PyTorch loop") and through
oneDNN (which the step's fused GRU and output layers use, models/components/onednn.py); the
target row divides by the higher of the two. The step's own matrix products, recorded once and
replayed alone (bench/matmul_replay.py), are timed with the steps: the share of the peak the
step would reach if nothing but its matmuls cost time, and the time it spends outside them.

Then the loss-curve check of `bf16-mixed`: 200 steps from the same initial weights over the same
Cornell-slice batches at fp32 and under bf16 autocast; the validation losses after those steps
must agree within 2 %.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import resource
import time
from collections.abc import Callable

import torch

from dialoglab.bench.common import (
    CORNELL_SLICE,
    Figure,
    median,
    set_seed,
    synchronized,
    time_calls,
    time_interleaved,
)
from dialoglab.bench.matmul_replay import Replay, record, time_groups
from dialoglab.bench.workloads import (
    STEP_PHASES,
    GRUSize,
    cornell_datamodule,
    make_optimizer,
    mean_nll,
    our_step,
    synthetic_batch,
    take_batches,
)
from dialoglab.models.components import dropout as dropout_module
from dialoglab.models.components import fused_gru, onednn
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq, count_flops_per_step
from dialoglab.models.components.linear_cross_entropy import summed_nll


def square_product(
    dtype: torch.dtype, n: int, library: str = "torch.mm", device: torch.device | None = None
) -> Callable[[], None]:
    """One (n x n) @ (n x n) matmul per call through torch.mm (into a preallocated output) or
    through oneDNN (`library="oneDNN"`, fp32 on the CPU), on `device` (the CPU by default; on
    CUDA each call waits for the device)."""
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)

    def product() -> torch.Tensor:
        if library == "oneDNN":  # whether or not it is this CPU's default
            return onednn.onednn_linear(a, b.t())
        return torch.mm(a, b, out=out)

    return synchronized(product, device)


def matmul_gflops(
    dtype: torch.dtype,
    n: int,
    repeats: int,
    library: str = "torch.mm",
    device: torch.device | None = None,
) -> float:
    """Best GFLOP/s of `square_product(dtype, n, library, device)`."""
    product = square_product(dtype, n, library, device)
    # warm-up (thread pool, kernel choice, page faults), then the best of the timed calls
    best = min(time_calls(product, repeats, warmup=1))
    return 2 * n**3 / best / 1e9


def matmul_peak(dtype: torch.dtype, quick: bool, library: str = "torch.mm") -> tuple[float, int]:
    """(best GFLOP/s, at size n) over a few sizes."""
    sizes = (256, 512) if quick else (1024, 2048, 3072)
    results = {n: matmul_gflops(dtype, n, 3 if quick else 6, library) for n in sizes}
    n = max(results, key=results.__getitem__)
    return results[n], n


def peaks(quick: bool) -> dict[str, tuple[float, int]]:
    """(GFLOP/s, n) of the fp32 peak through torch.mm and oneDNN (when the build has it), and
    the bf16 peak (torch.mm, which is oneDNN's matmul for bf16)."""
    found = {"fp32 torch.mm": matmul_peak(torch.float32, quick)}
    if onednn.AVAILABLE:  # whether or not this CPU's default uses it
        found["fp32 oneDNN"] = matmul_peak(torch.float32, quick, "oneDNN")
    found["bf16"] = matmul_peak(torch.bfloat16, quick)
    return found


def warmed_fp32_step(size: GRUSize) -> Callable[..., float]:
    """`our_step` on a fresh fp32 network (seed 0), its optimizer and one full-length batch,
    after two warm-up steps; keyword arguments go to `our_step`."""
    set_seed(0)
    net = GRUAttnSeq2Seq(size.config()).train()
    batch = synthetic_batch(size.vocab, size.batch, size.length, size.length)
    step = functools.partial(our_step, net, make_optimizer(net), batch)
    for _ in range(2):
        step()
    return step


def page_faults_per_step(size: GRUSize, steps: int) -> float:
    """Minor page faults per fp32 training step, after two warm-up steps."""
    step = warmed_fp32_step(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def step_timing(
    size: GRUSize, quick: bool, probe: tuple[str, int]
) -> tuple[dict[str, list[float]], Replay]:
    """Seconds (all timed calls) of the fp32 and the bf16-autocast training step on one
    full-length batch, each also with nn.GRU layers (`model.fused_rnn=false`) and with the
    output layer W_o an nn.Linear (weight stored (out, in)) instead of `ColumnMajorLinear`;
    fp32 also with the C++ loops' gate maths as ATen ops (`fused_gru.FUSED_GATES` off), with
    its matmuls through the library this CPU's default does not pick (`fp32_other_library`:
    oneDNN or MKL, `onednn.ENABLED` flipped; where the build has oneDNN); both with the loss
    apart from W_o (`unfused_nll`) and with torch.randint's dropout masks (`dropout.HASHED`
    off); bf16 also with its biased products through torch.addmm (`onednn.BF16_PRODUCTS` off);
    both again as they are (`*_twin`) and on a copy of the network (`*_copy`): two A/A pairs;
    the fp32 step's matrix products alone (`fp32_matmuls`, bench/matmul_replay.py); and
    `probe` = (library, n), the fp32 peak's square matmul (`fp32_peak_probe`), so that each
    round also reads the rate a dense matmul gets at that moment. Also returns that replay of
    the step's products.

    Every contender that differs by a switch steps one and the same network and optimizer (the
    switches are set around its call), so that a "time saved" row compares the same memory; only
    W_o's nn.Linear and the A/A copy are networks of their own. The A/A rows read the noise that
    is left: up to ~12 ms of a ~190 ms step in one `make bench` run, so a row of a few ms is
    noise in any one run (docs/benchmarks.md, "third session")."""
    set_seed(0)
    net = GRUAttnSeq2Seq(size.config()).train()
    batch = synthetic_batch(size.vocab, size.batch, size.length, size.length)
    recorded = copy.deepcopy(net)  # one step of its own, so every timed copy starts alike
    matmuls = Replay(record(lambda: our_step(recorded, make_optimizer(recorded), batch)))
    linear_w_o = copy.deepcopy(net)
    linear_w_o.decoder.W_o = linear_w_o.decoder.W_o.to_linear()
    networks = {"shared": net, "linear_w_o": linear_w_o, "copy": copy.deepcopy(net)}
    optimizers = {key: make_optimizer(n) for key, n in networks.items()}
    names = [
        f"{p}{v}"
        for p in ("fp32", "bf16")
        for v in ("", "_nn_gru", "_linear_w_o", "_unfused_loss", "_randint_dropout", "_twin")
    ]
    names += ["fp32_aten_gates", "bf16_aten_addmm", "fp32_copy", "bf16_copy"]
    if onednn.AVAILABLE:
        names.append("fp32_other_library")

    setting = fused_gru.FUSED_GATES  # as the environment left it (DIALOGLAB_FUSED_GATES)
    library = onednn.ENABLED  # this CPU's default (or DIALOGLAB_ONEDNN)
    bf16_products = onednn.BF16_PRODUCTS  # DIALOGLAB_ONEDNN_BF16

    def step(name: str) -> float:
        key = next((k for k in ("linear_w_o", "copy") if name.endswith(k)), "shared")
        network = networks[key]
        fused_gru.FUSED_GATES = setting and name != "fp32_aten_gates"
        onednn.ENABLED = library != (name == "fp32_other_library")
        onednn.BF16_PRODUCTS = bf16_products and name != "bf16_aten_addmm"
        fused_rnn = network.fused_rnn  # the config's default
        network.fused_rnn = fused_rnn and not name.endswith("_nn_gru")
        forward = unfused_nll if name.endswith("_unfused_loss") else None
        try:
            with dropout_module.hashed_masks(not name.endswith("_randint_dropout")):
                return our_step(network, optimizers[key], batch, "bf16" in name, forward=forward)
        finally:
            fused_gru.FUSED_GATES = setting
            onednn.ENABLED = library
            onednn.BF16_PRODUCTS = bf16_products
            network.fused_rnn = fused_rnn

    times = time_interleaved(
        {
            **{name: (lambda name=name: step(name)) for name in names},
            "fp32_matmuls": matmuls,
            "fp32_peak_probe": square_product(torch.float32, probe[1], probe[0]),
        },
        repeats=3 if quick else 16,  # A/A rows read up to ~12 ms at 8 rounds
        warmup=1 if quick else 2,
        settle=0 if quick else 1,  # a step after a step of the same contender, as in training
    )
    return times, matmuls


def unfused_nll(net: GRUAttnSeq2Seq, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The step's loss as it was before `linear_cross_entropy`: W_o's logits, then
    F.cross_entropy of them (`summed_nll`)."""
    keep = batch["target"] != net.config.pad_id
    logits = net(batch["src"], batch["src_lengths"], batch["decoder_input"], keep)  # (N, V)
    return summed_nll(logits, batch["target"][keep])


def phase_timing(size: GRUSize, quick: bool) -> dict[str, float]:
    """Median seconds of each phase of the fp32 training step (`our_step`'s `STEP_PHASES`:
    forward, backward, gradient norm, optimizer), on a network of its own after two steps."""
    step = warmed_fp32_step(size)
    phases: dict[str, list[float]] = {}
    for _ in range(3 if quick else 12):
        step(phases=phases)
    return {name: median(phases[name]) for name in STEP_PHASES}


def _phase_rows(phases: dict[str, float], flops: int, peak: float) -> list[Figure]:
    """The fp32 step's phases, and the share of the peak its forward + backward reach alone (all
    its FLOPs are there: the ceiling if clipping and the optimizer cost nothing)."""
    compute = phases["forward"] + phases["backward"]
    return [
        *(
            Figure(
                f"gru_attn step fp32, {name}",
                round(seconds * 1e3, 1),
                "ms",
                note="perf_counter between the phases of a step (workloads.our_step), median",
            )
            for name, seconds in phases.items()
        ),
        Figure(
            "gru_attn step fp32, forward + backward alone / fp32 peak",
            round(100 * flops / compute / 1e9 / peak, 1),
            "%",
            note=f"{compute * 1e3:.1f} ms: the step's share if clipping and Adam cost nothing",
        ),
    ]


def encoder_timing(size: GRUSize, quick: bool) -> dict[str, list[float]]:
    """Seconds of forward + backward through gru_attn's encoder GRU (bidirectional, `size`'s
    layers, hidden, batch and length; fp32, fused), interleaved: as it runs (`default`), with
    each step's gate passes on one thread (`fused_gru.parallel_rows`) and with every weight
    gradient on MKL (`onednn.WEIGHT_GRADS` off). A layer stack, not the whole step: each of these
    is a few ms of a ~400 ms step, below a step's run-to-run noise."""
    set_seed(0)
    H = size.hidden
    rnn = torch.nn.GRU(H, H, size.layers, batch_first=True, bidirectional=True)
    x = torch.randn(size.batch, size.length, H, requires_grad=True)

    def fwd_bwd(split: bool = True, onednn_weight_grads: bool = True) -> None:
        setting = onednn.WEIGHT_GRADS
        onednn.WEIGHT_GRADS = setting and onednn_weight_grads
        try:
            with fused_gru.parallel_rows(split):
                outputs, h_n = fused_gru.fused_gru(rnn, x)
                (outputs.sum() + h_n.sum()).backward()
        finally:
            onednn.WEIGHT_GRADS = setting

    return time_interleaved(
        {
            "default": fwd_bwd,
            "one thread": lambda: fwd_bwd(split=False),
            "mkl weight grads": lambda: fwd_bwd(onednn_weight_grads=False),
        },
        repeats=3 if quick else 40,
        warmup=1 if quick else 3,
    )


def loss_curves(size: GRUSize, steps: int, quick: bool) -> dict[str, float]:
    """Train the same initial weights over the same batches at fp32 and bf16; compare losses."""
    if (CORNELL_SLICE / "movie_lines.txt").is_file():
        set_seed(0)
        dm = cornell_datamodule(batch_size=size.batch, bucket=True)
        batches = take_batches(dm.train_dataloader(), steps)
        val = take_batches(dm.val_dataloader(), 4 if not quick else 1)
        vocab, source = len(dm.tokenizer), "Cornell slice (bucketed batches)"
    else:  # a learnable stand-in: reply = source reversed
        vocab, source = size.vocab, "synthetic reversal task"
        batches, val = [], []
        for k in range(steps + 4):
            b = synthetic_batch(vocab, size.batch, size.length, size.length, seed=k)
            b["target"] = b["src"].flip(1)
            b["decoder_input"] = torch.cat([b["decoder_input"][:, :1], b["target"][:, :-1]], 1)
            (batches if k < steps else val).append(b)
    set_seed(1)
    initial = GRUAttnSeq2Seq(size.config(vocab=vocab)).state_dict()
    result: dict[str, float] = {"source": source}  # type: ignore[dict-item]
    for name in ("fp32", "bf16"):
        set_seed(2)  # the same dropout masks for both
        net = GRUAttnSeq2Seq(size.config(vocab=vocab)).train()
        net.load_state_dict(initial)
        optimizer = make_optimizer(net)
        start = time.perf_counter()
        losses = [our_step(net, optimizer, b, bf16=name == "bf16") for b in batches]
        result[f"{name}_seconds"] = time.perf_counter() - start
        tail = losses[-min(20, len(losses)) :]
        result[f"{name}_train_loss_last20"] = sum(tail) / len(tail)
        result[f"{name}_val_loss"] = mean_nll(net, val)
    return result


def dropout_timing(quick: bool) -> dict[str, float]:
    """Median seconds of forward + backward dropout (p=0.1) on a (T, B, 2H) bf16 activation, as
    between the encoder's layers: `F.dropout` vs `models/components/dropout.py`, with its
    hashed masks (`hashed_dropout.cpp`, where the extension loads) and with torch.randint's."""
    from torch.nn import functional as F

    from dialoglab.models.components.dropout import dropout

    x = torch.randn(10, 64, 50 if quick else 1000, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)

    def ours(hashed: bool) -> None:
        with dropout_module.hashed_masks(hashed):
            dropout(x, 0.1).backward(grad)

    times = time_interleaved(
        {
            "F.dropout": lambda: F.dropout(x, 0.1, training=True).backward(grad),
            "ours": lambda: ours(True),
            "ours, randint masks": lambda: ours(False),
        },
        repeats=5 if quick else 30,
        warmup=2,
    )
    return {name: median(ts) for name, ts in times.items()}


def _nn_gru_rows(times: dict[str, float], key: str, label: str) -> list[Figure]:
    """The step with nn.GRU layers (`model.fused_rnn=false`) and the fused GRU's speed-up."""
    plain = times[f"{key}_nn_gru"]
    return [
        Figure(
            f"gru_attn step {label} with nn.GRU layers",
            round(plain * 1e3, 1),
            "ms",
            note="model.fused_rnn=false",
        ),
        Figure(f"fused GRU speed-up ({key} step)", round(plain / times[key], 2), "x"),
    ]


def paired_saving(all_times: dict[str, list[float]], slower: str, faster: str) -> float:
    """Median over rounds of `slower`'s time minus `faster`'s in the same round (seconds):
    time_interleaved runs every contender once per round, so a load change that hits one round
    hits both; steadier than the difference of two medians on a busy machine."""
    return median([a - b for a, b in zip(all_times[slower], all_times[faster], strict=True)])


def _paired_row(
    name: str, all_times: dict[str, list[float]], slower: str, faster: str, note: str = ""
) -> Figure:
    """A row of `paired_saving(all_times, slower, faster)` in ms (2 decimals)."""
    saved = paired_saving(all_times, slower, faster) * 1e3
    return Figure(name, round(saved, 2), "ms", note=note or "median of the per-round differences")


def _twin_rows(all_times: dict[str, list[float]], key: str) -> list[Figure]:
    """The A/A rows: the `key` step "saved" by itself run again as another contender (the same
    network: the rounds' noise) and by an identical copy of its network (other memory: that and
    where its parameters and optimizer state lie). Nothing else differs, so their size is what a
    "time saved" row of this run can show by chance."""
    return [
        _paired_row(
            f"A/A: the {key} step against itself, 'time saved'",
            all_times,
            key,
            f"{key}_twin",
            "the same network as another contender; median of the per-round differences",
        ),
        _paired_row(
            f"A/A: the {key} step against a copy of its network, 'time saved'",
            all_times,
            key,
            f"{key}_copy",
            "an identical copy of the network and its optimizer (their own memory); median "
            "of the per-round differences",
        ),
    ]


def _saving_rows(
    times: dict[str, float],
    all_times: dict[str, list[float]],
    key: str,
    without: str,
    label: str,
    saving: str,
    note: str,
) -> list[Figure]:
    """The `key` step timed without one of its speed-ups (contender `without`, row
    "gru_attn step {label}") and the time that speed-up saves (row "{saving} ({key} step)")."""
    return [
        Figure(f"gru_attn step {label}", round(times[without] * 1e3, 1), "ms", note=note),
        _paired_row(f"{saving} ({key} step)", all_times, without, key),
    ]


# Speed-ups timed against themselves undone: contender suffix -> (how the step runs without it,
# the row naming what it saves, the note).
_UNDONE = {
    "linear_w_o": (
        "with W_o stored (out, in)",
        "W_o stored (in, out): time saved",
        "decoder.W_o an nn.Linear instead of models/components/column_major_linear.py",
    ),
    "unfused_loss": (
        "with W_o and the loss apart",
        "fused output layer + loss: time saved",
        "W_o's logits, then F.cross_entropy (utilisation.unfused_nll) instead of "
        "models/components/linear_cross_entropy.py",
    ),
    "aten_addmm": (
        "with bf16 biased products through torch's addmm",
        "bf16 biased products through oneDNN's linear op: time saved",
        "onednn.BF16_PRODUCTS off: torch.addmm (the bias copied into every output row first) "
        "instead of mkldnn._linear_pointwise",
    ),
    "randint_dropout": (
        "with dropout masks from torch.randint",
        "hashed dropout masks: time saved",
        "dropout.HASHED off: 64-bit torch.randint draws, a mask buffer and its passes, instead "
        "of models/components/hashed_dropout.cpp",
    ),
}


def _undone_rows(
    times: dict[str, float], all_times: dict[str, list[float]], key: str, label: str, suffix: str
) -> list[Figure]:
    """The `key` step with the speed-up `_UNDONE[suffix]` undone, and what it saves."""
    without, saving, note = _UNDONE[suffix]
    return _saving_rows(
        times, all_times, key, f"{key}_{suffix}", f"{label} {without}", saving, note
    )


def _library_rows(times: dict[str, float], all_times: dict[str, list[float]]) -> list[Figure]:
    """The fp32 step with its matmuls through the other library, and what the default saves."""
    if "fp32_other_library" not in times:
        return []
    chosen, other = ("oneDNN", "MKL") if onednn.ENABLED else ("MKL", "oneDNN")
    return _saving_rows(
        times,
        all_times,
        "fp32",
        "fp32_other_library",
        f"fp32 with {other} matmuls",
        f"{chosen} matmuls (this CPU's default): time saved",
        f"onednn.ENABLED flipped; the default by CPU vendor ({onednn.cpu_vendor() or 'unknown'})",
    )


def _matmuls_alone_rows(
    all_times: dict[str, list[float]], matmuls: Replay, counted: int, peak: float, quick: bool
) -> list[Figure]:
    """The fp32 step's matrix products replayed alone: their time, their share of the peak
    (what the step would reach if nothing else cost time) and the step's time outside them;
    the time per product layout goes into the first row's extra (results.json)."""
    alone = median(all_times["fp32_matmuls"])
    groups = time_groups(matmuls, 3 if quick else 7)
    return [
        Figure(
            "gru_attn step fp32: its matmuls alone",
            round(alone * 1e3, 1),
            "ms",
            note=f"the step's {len(matmuls.products)} products recorded by torch.profiler "
            f"({matmuls.flops / 1e9:.2f} GFLOP; counted {counted / 1e9:.2f}), replayed back to "
            f"back on operands of the same layouts (bench/matmul_replay.py); most time: "
            f"{groups[0].count}x {groups[0].label} at {groups[0].gflops_per_s:.0f} GFLOP/s",
            extra={
                "recorded_flops": matmuls.flops,
                "counted_flops": counted,
                "groups": [dataclasses.asdict(group) for group in groups],
            },
        ),
        Figure(
            "gru_attn step fp32 matmuls alone / fp32 peak",
            round(100 * matmuls.flops / alone / 1e9 / peak, 1),
            "%",
            note="the ceiling on the step's share: the matmul libraries on the step's shapes",
        ),
        _paired_row(
            "gru_attn step fp32: time outside its matmuls",
            all_times,
            "fp32",
            "fp32_matmuls",
            "median of the per-round differences step - matmuls alone",
        ),
    ]


def _alongside_row(all_times: dict[str, list[float]], flops: int, probe: tuple[str, int]) -> Figure:
    """The fp32 step's FLOP/s over the peak's square matmul's, both timed in the same rounds
    (median of the per-round ratios): the step's share of what a dense matmul got at those
    moments, apart from the clock and load changes between the peak's and the step's timing."""
    library, n = probe
    ratios = [
        (flops / step) / (2 * n**3 / product)
        for step, product in zip(all_times["fp32"], all_times["fp32_peak_probe"], strict=True)
    ]
    rates = [2 * n**3 / t / 1e9 for t in all_times["fp32_peak_probe"]]
    return Figure(
        "gru_attn step fp32 / a dense matmul timed alongside",
        round(100 * median(ratios), 1),
        "%",
        note=f"{library} n={n} in every round of the step timings (read "
        f"{min(rates):.0f}-{max(rates):.0f} GFLOP/s); median of the per-round ratios",
    )


def _encoder_rows(times: dict[str, list[float]] | None, size: GRUSize) -> list[Figure]:
    """`encoder_timing`'s rows (none without the C++ loops, which hold the gate passes)."""
    if times is None:
        return []
    workload = (
        f"fp32, {size.layers} bidirectional layers, H={size.hidden}, B={size.batch}, "
        f"T={size.length}"
    )
    rows = [
        Figure(
            "encoder GRU fwd+bwd",
            round(median(times["default"]) * 1e3, 1),
            "ms",
            note=workload,
        ),
        _paired_row(
            "encoder GRU fwd+bwd: time saved by splitting the gate passes over threads",
            times,
            "one thread",
            "default",
            "vs fused_gru.set_parallel_rows(False); median of the per-round differences",
        ),
    ]
    if onednn.ENABLED:  # else every weight gradient is MKL's either way
        rows.append(
            _paired_row(
                "encoder GRU fwd+bwd: time saved by oneDNN's weight gradients",
                times,
                "mkl weight grads",
                "default",
                "vs onednn.WEIGHT_GRADS off (MKL's transposed products); median of the "
                "per-round differences",
            )
        )
    return rows


def run(quick: bool = False) -> list[Figure]:
    size = GRUSize.for_run(quick)
    threads = torch.get_num_threads()
    before = peaks(quick)
    library = max((k for k in before if k.startswith("fp32")), key=lambda k: before[k][0])
    probe = (library.split()[1], before[library][1])  # the fp32 peak's library and size
    all_times, matmuls = step_timing(size, quick, probe)
    times = {name: median(ts) for name, ts in all_times.items()}
    best32 = min(all_times["fp32"])
    found = {name: max(value, peaks(quick)[name]) for name, value in before.items()}  # best of 2
    faults = page_faults_per_step(size, 2 if quick else 5)
    fp32_peaks = {name: found[name] for name in found if name.startswith("fp32")}
    peak32 = max(value for value, _ in fp32_peaks.values())
    mm32 = found["fp32 torch.mm"][0]
    peak16, n16 = found["bf16"]
    flops = count_flops_per_step(size.config(), size.batch, size.length, size.length)
    achieved32 = flops / times["fp32"] / 1e9
    achieved16 = flops / times["bf16"] / 1e9
    drop = dropout_timing(quick)
    phases = phase_timing(size, quick)
    encoder = encoder_timing(size, quick) if fused_gru.compiled_loops() else None
    steps = 10 if quick else 200
    curves = loss_curves(size, steps, quick)
    rel = abs(curves["bf16_val_loss"] - curves["fp32_val_loss"]) / curves["fp32_val_loss"]
    workload = (
        f"H={size.hidden}, {size.layers}+{size.layers} layers, B={size.batch}, "
        f"V={size.vocab}, S=T={size.length}; {flops / 1e9:.1f} GFLOP/step"
    )
    return [
        *(
            Figure(
                f"fp32 matmul peak, {name.split()[1]}",
                round(value, 1),
                "GFLOP/s",
                note=f"n={n}, {threads} threads",
            )
            for name, (value, n) in fp32_peaks.items()
        ),
        Figure("bf16 matmul peak", round(peak16, 1), "GFLOP/s", note=f"n={n16}, {threads} threads"),
        Figure("gru_attn step fp32", round(times["fp32"] * 1e3, 1), "ms", note=workload),
        Figure("gru_attn step fp32 achieved", round(achieved32, 1), "GFLOP/s"),
        Figure(
            "gru_attn step fp32 / fp32 peak",
            round(100 * achieved32 / peak32, 1),
            "%",
            target=(">=", 75.0),
            note="the higher of the torch.mm and oneDNN peaks",
        ),
        Figure("gru_attn step fp32 / torch.mm peak", round(100 * achieved32 / mm32, 1), "%"),
        Figure(
            "gru_attn step fp32, best timed step / fp32 peak",
            round(100 * flops / best32 / 1e9 / peak32, 1),
            "%",
            note=f"{best32 * 1e3:.1f} ms: the step timed as the peak is (best of the runs)",
        ),
        _alongside_row(all_times, flops, probe),
        *_matmuls_alone_rows(all_times, matmuls, flops, peak32, quick),
        *_phase_rows(phases, flops, peak32),
        Figure(
            "page faults per fp32 step",
            round(faults),
            "",
            note="with experiment/cpu_heap.py keep_freed_memory, as train.py runs",
        ),
        *_nn_gru_rows(times, "fp32", "fp32"),
        *_undone_rows(times, all_times, "fp32", "fp32", "linear_w_o"),
        *_saving_rows(
            times,
            all_times,
            "fp32",
            "fp32_aten_gates",
            "fp32 with ATen gate ops",
            "fused gate passes: time saved",
            "fused_gru.FUSED_GATES off: the C++ loops' gate maths as ATen kernels",
        ),
        *_library_rows(times, all_times),
        *_undone_rows(times, all_times, "fp32", "fp32", "unfused_loss"),
        *_undone_rows(times, all_times, "fp32", "fp32", "randint_dropout"),
        *_twin_rows(all_times, "fp32"),
        *_encoder_rows(encoder, size),
        Figure("gru_attn step bf16-autocast", round(times["bf16"] * 1e3, 1), "ms"),
        *_nn_gru_rows(times, "bf16", "bf16-autocast"),
        *_undone_rows(times, all_times, "bf16", "bf16-autocast", "linear_w_o"),
        *_undone_rows(times, all_times, "bf16", "bf16-autocast", "unfused_loss"),
        *_undone_rows(times, all_times, "bf16", "bf16-autocast", "randint_dropout"),
        *_undone_rows(times, all_times, "bf16", "bf16-autocast", "aten_addmm"),
        *_twin_rows(all_times, "bf16"),
        Figure(
            "dropout fwd+bwd, F.dropout",
            round(drop["F.dropout"] * 1e3, 2),
            "ms",
            note="p=0.1, (10, 64, 1000) bf16",
        ),
        Figure(
            "dropout fwd+bwd, models/components/dropout.py",
            round(drop["ours"] * 1e3, 2),
            "ms",
            note="masks hashed from (seed, index) in C++"
            if fused_gru.compiled_loops() and dropout_module.HASHED
            else "torch.randint masks (no C++ extension here)",
        ),
        Figure(
            "dropout fwd+bwd, models/components/dropout.py with torch.randint masks",
            round(drop["ours, randint masks"] * 1e3, 2),
            "ms",
            note="16 random bits per element, 64 at a time",
        ),
        Figure(
            "gru_attn step bf16 / bf16 peak",
            round(100 * achieved16 / peak16, 1),
            "%",
            note=f"{achieved16:.1f} GFLOP/s",
        ),
        Figure(
            "bf16-mixed speed-up over fp32 (step)",
            round(times["fp32"] / times["bf16"], 2),
            "x",
            target=(">=", 1.5),
        ),
        Figure(
            f"bf16 vs fp32 val loss after {steps} steps",
            round(100 * rel, 2),
            "%",
            target=("<=", 2.0),
            note=(
                f"fp32 {curves['fp32_val_loss']:.4f} vs bf16 {curves['bf16_val_loss']:.4f} "
                f"on {curves['source']}; {steps} steps took {curves['fp32_seconds']:.0f} s "
                f"fp32, {curves['bf16_seconds']:.0f} s bf16"
            ),
            extra=curves,
        ),
    ]
