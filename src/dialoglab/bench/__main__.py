"""`python -m dialoglab.bench [--only NAME[,NAME]] [--quick] [--out DIR]`: run the benchmarks.

Each benchmark runs in a child process of its own; results go to
`outputs/bench/<date>/results.json` and `results.md` (`<date>-quick` with --quick), one row per
figure with its target, whether it was met and the command that measures it again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dialoglab.bench.common import (
    REPO_ROOT,
    Figure,
    apply_thread_setting,
    environment,
    load_average,
    run_isolated,
)

# name -> (module:function called with quick=..., what it measures)
BENCHES: dict[str, tuple[str, str]] = {
    "utilisation": (
        "dialoglab.bench.utilisation:run",
        "matmul peak, gru_attn step FLOP/s, bf16 speed-up and loss curve",
    ),
    "tutorial_step": (
        "dialoglab.bench.vs_tutorial:run_step",
        "one training step: tutorial's per-step decoder loop vs our parallel step",
    ),
    "tutorial_run": (
        "dialoglab.bench.vs_tutorial:run_whole",
        "wall time to a fixed val loss on the Cornell slice, ours vs the tutorial recipe",
    ),
    "lightning": (
        "dialoglab.bench.lightning_overhead:run",
        "GPT-2 scratch tokens/s through lightning.Trainer vs a plain loop",
    ),
    "compile": (
        "dialoglab.bench.compile:run",
        "GPT-2 scratch training step with model.compile=true (torch.compile) vs eager",
    ),
    "gpt2_step": (
        "dialoglab.bench.gpt2_step:run",
        "GPT-2 scratch training step: our defaults vs each undone (GELU, output layer, dropout)",
    ),
    "data": (
        "dialoglab.bench.data:run",
        "parse + tokenize the slice and a full-size synthetic Cornell, cold and cached",
    ),
    "replies": (
        "dialoglab.bench.replies:run",
        "reply latency p50/p95 and batched generation throughput",
    ),
    "memory": ("dialoglab.bench.memory:run", "peak RSS of a gru_attn training epoch"),
    "chat": (
        "dialoglab.bench.chat_latency:run",
        "Chatbot.reply latency of a trained checkpoint (DIALOGLAB_CHAT_CKPT or newest in outputs/)",
    ),
    "gpu": (
        "dialoglab.bench.gpu:run",
        "on a CUDA device: matmul peaks, gru_attn vs the tutorial loop, GPT-2 124M MFU, DDP",
    ),
}
BUDGET_SECONDS = 15 * 60


def command_for(name: str, quick: bool) -> str:
    threads = os.environ.get("DIALOGLAB_BENCH_THREADS")
    return (
        f"python -m dialoglab.bench --only {name}"
        + (" --quick" if quick else "")
        + (f" --threads {threads}" if threads else "")
    )


def fmt_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def write_markdown(path: Path, report: dict[str, Any], figures: list[Figure]) -> None:
    env = report["environment"]
    lines = [
        f"# dialoglab benchmarks — {report['started']}",
        "",
        f"- command: `{report['command']}`"
        + (" (quick sizes: not the real figures)" if report["quick"] else ""),
        f"- device: {env.get('cuda') or 'CPU only'}; CPU: {env['cpu']} ({env['logical_cpus']} logical CPUs, "
        f"{env['cpu_capability']})",
        f"- torch {env['torch']}, lightning {env['lightning']}, transformers "
        f"{env.get('transformers', '?')}, Python {env['python']}",
        f"- threads: torch {env['torch_threads']} intra-op / {env['torch_interop_threads']} "
        f"inter-op, OMP_NUM_THREADS={env['omp_num_threads']}",
        "- load average (1/5/15 min): start {}, end {}; highest 1-min load seen between "
        "benchmarks {:.2f}".format(
            " / ".join(f"{x:.2f}" for x in report["load_average"]["start"]),
            " / ".join(f"{x:.2f}" for x in report["load_average"]["end"]),
            report["load_average"]["max_1min"],
        ),
        f"- total wall time: {report['seconds']:.0f} s (budget {BUDGET_SECONDS} s)",
        "",
        "| figure | value | target | met? | command | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fig in figures:
        value = fmt_value(fig.value) + (
            f" {fig.unit}" if fig.unit and fig.value is not None else ""
        )
        note = fig.note.replace("|", "/")
        lines.append(
            f"| {fig.name} | {value} | {fig.target_text()} | {met_text(fig.met)} | "
            f"`{command_for(fig.bench, report['quick'])}` | {note} |"
        )
    errors = {n: b["error"] for n, b in report["benches"].items() if b.get("error")}
    if errors:
        lines += ["", "## Benchmarks that failed", ""]
        lines += [
            f"- `{name}`: {err.splitlines()[-1] if err else ''}" for name, err in errors.items()
        ]
    lines += ["", "Per benchmark: seconds, 1-min load average before → after", ""]
    for name, b in report["benches"].items():
        lines.append(
            f"- `{name}`: {b['seconds']:.0f} s, load {b['load_before']:.2f} → {b['load_after']:.2f}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dialoglab.bench", description=__doc__)
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHES)}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code runs")
    parser.add_argument("--out", default=None, help="output folder (default outputs/bench/<date>)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in every benchmark (default: torch's own choice)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        os.environ["DIALOGLAB_BENCH_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        apply_thread_setting()

    if args.list:
        for name, (_, what) in BENCHES.items():
            print(f"{name:14s} {what}")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    started = dt.datetime.now()
    out = (
        Path(args.out)
        if args.out
        else (
            REPO_ROOT
            / "outputs"
            / "bench"
            / (started.strftime("%Y-%m-%d") + ("-quick" if args.quick else ""))
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    command = (
        "python -m dialoglab.bench"
        + (f" --only {','.join(names)}" if args.only else "")
        + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads else "")
    )
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "quick": args.quick,
        "environment": environment(),
        "load_average": {"start": list(load_average())},
        "benches": {},
    }
    figures: list[Figure] = []
    t0 = time.perf_counter()
    max_load = report["load_average"]["start"][0]
    for name in names:
        target, _ = BENCHES[name]
        load_before = load_average()[0]
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        error = None
        try:
            result = run_isolated(target, {"quick": args.quick}, timeout=BUDGET_SECONDS)
            new = [Figure.from_dict(f) for f in result]
        except Exception as err:  # a failing benchmark is reported, the others still run
            error, new = f"{type(err).__name__}: {err}", []
            print(f"[bench] {name} FAILED: {error}", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
        load_after = load_average()[0]
        max_load = max(max_load, load_before, load_after)
        for fig in new:
            fig.bench = name
            met = {True: "met", False: "NOT met", None: ""}[fig.met]
            print(f"    {fig.name}: {fmt_value(fig.value)} {fig.unit} {fig.target_text()} {met}")
        figures.extend(new)
        report["benches"][name] = {
            "seconds": seconds,
            "error": error,
            "load_before": load_before,
            "load_after": load_after,
        }
        print(f"[bench] {name} done in {seconds:.0f} s", flush=True)
    report["seconds"] = time.perf_counter() - t0
    report["load_average"]["end"] = list(load_average())
    report["load_average"]["max_1min"] = max(max_load, report["load_average"]["end"][0])
    report["figures"] = [f.to_dict() for f in figures]
    for f in report["figures"]:
        f["command"] = command_for(f["bench"], args.quick)
    (out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_markdown(out / "results.md", report, figures)
    print(
        f"[bench] wrote {out / 'results.json'} and {out / 'results.md'} ({report['seconds']:.0f} s)"
    )
    return 1 if any(b["error"] for b in report["benches"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
