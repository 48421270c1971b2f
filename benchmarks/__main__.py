"""`python -m benchmarks [--only NAME[,NAME]] [--quick] [--threads N] [--ckpt PATH] [--out DIR]`.

Runs each benchmark in a child process of its own and writes `results.json` and `results.md`
(one row per figure, with its target and whether it was met) to `outputs/bench/<date>/`
(`<date>-quick` with --quick). Run it from the repository root (`make bench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, Figure, environment, load_average, run_isolated

# name -> (module:function, what it measures); docs/benchmarks.md says more about each
BENCHES: dict[str, tuple[str, str]] = {
    "tutorial_step": ("vs_tutorial:run_step", "gru_attn training step: tutorial's loop vs ours"),
    "tutorial_run": ("vs_tutorial:run_whole", "time to a val loss on the slice: ours vs tutorial"),
    "lightning": ("lightning_overhead:run", "GPT-2 scratch tokens/s: lightning.Trainer vs plain"),
    "data": ("data:run", "parse + tokenize the slice and a full-size synthetic Cornell"),
    "memory": ("memory:run", "peak RSS and wall time of one train.py epoch"),
    "replies": ("replies:run", "reply latency p50/p95 and throughput: fp32, int8, accel=none"),
    "chat": ("chat_latency:run", "Chatbot.reply latency of a trained checkpoint"),
    "decoding": ("decoding:run", "quality and p50 per decoding of a checkpoint on its val split"),
    "speed_paths": ("speed_paths:run", "training epoch time and tokens/s, accel=auto vs none"),
    "gpu": ("gpu:run", "on a CUDA device: gru_attn vs the tutorial, GPT-2 MFU, DDP"),
}
BUDGET_SECONDS = 15 * 60
MET = {True: "yes", False: "**no**", None: ""}  # a figure against its target


def command_for(names: list[str], args: argparse.Namespace) -> str:
    """The command that measures `names` again with the same options."""
    return " ".join(
        ["python -m benchmarks", "--only " + ",".join(names) if names else ""]
        + (["--quick"] if args.quick else [])
        + ([f"--threads {args.threads}"] if args.threads else [])
        + ([f"--ckpt {args.ckpt}"] if args.ckpt else [])
    ).replace("  ", " ")


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    env = report["environment"]
    lines = [
        f"# dialoglab benchmarks: {report['started']}",
        "",
        f"- command: `{report['command']}`" + (" (quick sizes)" if report["quick"] else ""),
        f"- device: {env['cuda'] or 'CPU only'}; CPU: {env['cpu']} ({env['logical_cpus']} logical)",
        f"- torch {env['torch']}, lightning {env['lightning']}, transformers "
        f"{env['transformers']}, Python {env['python']}; torch threads {env['torch_threads']}",
        f"- total {report['seconds']:.0f} s; 1-min load average {report['load'][0]:.2f} at the "
        f"start, {report['load'][1]:.2f} at the end",
        "",
        "| figure | value | target | met? | `--only` | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fig in map(Figure.from_dict, report["figures"]):
        row = (fig.name, fig.value_text(), fig.target_text(), MET[fig.met], fig.bench, fig.note)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    lines += ["", "Per benchmark: the command that measures it again, its wall time, any error", ""]
    for bench in report["benches"].values():
        error = f", FAILED: {bench['error'].splitlines()[-1]}" if bench["error"] else ""
        lines.append(f"- `{bench['command']}`: {bench['seconds']:.0f} s{error}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_one(name: str, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    """One benchmark in its own child process: its figures and a summary of the run."""
    print(f"[bench] {name} ...", flush=True)
    start, error, figures = time.perf_counter(), None, []
    kwargs = {"quick": args.quick, "ckpt_path": args.ckpt}
    try:
        result = run_isolated(
            "benchmarks." + BENCHES[name][0], kwargs, args.threads, BUDGET_SECONDS
        )
        figures = [Figure.from_dict(f) for f in result]
    except Exception as err:  # a failing benchmark is reported, the others still run
        error = f"{type(err).__name__}: {err}"
        print(f"[bench] {name} FAILED: {error}", file=sys.stderr, flush=True)
    for fig in figures:
        fig.bench = name
        print(f"    {fig.name}: {fig.value_text()} {fig.target_text()} {MET[fig.met]}".rstrip())
    seconds = time.perf_counter() - start
    print(f"[bench] {name} done in {seconds:.0f} s", flush=True)
    return figures, {"seconds": seconds, "error": error, "command": command_for([name], args)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every child")
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint for `chat`, `decoding` (default: newest)"
    )
    parser.add_argument("--out", default=None, help="output folder (default outputs/bench/<date>)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, what) in BENCHES.items():
            print(f"{name:14s} {what}")
        return 0
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    started = dt.datetime.now()
    folder = started.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    out = Path(args.out) if args.out else REPO_ROOT / "outputs" / "bench" / folder
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": command_for(names if args.only else [], args),
        "quick": args.quick,
        "environment": environment(),
        "benches": {},
        "figures": [],
    }
    load_start, t0 = load_average(), time.perf_counter()
    for name in names:
        figures, report["benches"][name] = run_one(name, args)
        report["figures"] += [f.to_dict() for f in figures]
    report["seconds"] = time.perf_counter() - t0
    report["load"] = [load_start, load_average()]
    (out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_markdown(out / "results.md", report)
    print(f"[bench] wrote {out / 'results.json'} and results.md ({report['seconds']:.0f} s)")
    return 1 if any(b["error"] for b in report["benches"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
