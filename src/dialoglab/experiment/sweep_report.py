"""Compare runs offline: a ranked Markdown/HTML table and PNG plots from what runs leave on disk.

    python -m dialoglab.report outputs/train/sweeps/gru_attn_optuna [--metric val/ppl_best]

Every run directory under the given folder is read (a run is a folder with `.hydra/`,
`metrics.json` or `csv/metrics.csv`): the Hydra overrides it ran with (`.hydra/overrides.yaml`),
its best checkpoint's metrics, parameter count and wall time (`metrics.json`, written by
train.py; the best validation epoch's `val/*` for runs without one) and its
CSV log (`csv/metrics.csv`), which also fills in metrics of runs that never finished. Nothing is
fetched from W&B, so this works for offline and unsynced runs. Written to `<dir>/report/`:
`report.md`, `report.html`, `runs.csv`, `plots/param_<name>.png` (each swept parameter against
the objective) and `plots/learning_curves.png` (val/ppl per epoch of the top runs).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dialoglab.errors import DataError, DialoglabError
from dialoglab.experiment.study_report import read_study, with_study

REPORT_DIR = "report"
# overrides that say where a run went, not what it trained
IGNORED_KEYS = re.compile(r"^(paths\.|hydra\.|hydra/|task_name$|tags$|sweep_trial\.)")
COLUMNS = (  # (metric, header, format)
    ("val/bleu", "val/bleu", "{:.2f}"),
    ("val/distinct_2", "val/distinct_2", "{:.3f}"),
)


@dataclass
class Run:
    path: Path
    name: str
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    n_params: int | None = None
    wall_time_s: float | None = None
    status: str = "incomplete"  # ok | failed | incomplete
    error: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/ppl)

    def value(self, metric: str) -> float:
        v = self.metrics.get(metric, math.nan)
        return v if isinstance(v, float) and math.isfinite(v) else math.nan


# -- reading ------------------------------------------------------------------------------------
def find_runs(root: Path) -> list[Path]:
    """Run directories under `root` (itself included), in path order."""
    found = set()
    for marker in (".hydra/overrides.yaml", "metrics.json", "csv/metrics.csv"):
        for path in root.glob(f"**/{marker}"):
            run = path.parents[marker.count("/")]
            if REPORT_DIR not in run.relative_to(root).parts:
                found.add(run)
    # a DDP run's ddp/ folder or a nested csv/ folder is part of its run, not a run
    return sorted(r for r in found if not any(p in found for p in r.parents if p != r))


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def read_csv_log(path: Path) -> tuple[list[tuple[int, float]], dict[str, float]]:
    """Lightning's CSVLogger file -> (val/ppl per epoch, metrics of one checkpoint).

    The metrics are the best validation's `val/*` (lowest val/ppl, the first of equals: the
    epoch the checkpoint callback keeps), the last epoch's under `last_epoch/val/*`, and the
    last logged value of every other metric (train/*, test/* of the tested checkpoint).
    """
    curve: dict[int, float] = {}
    last: dict[str, float] = {}
    validations: list[dict[str, float]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            values = {k: v for k, t in row.items() if k and (v := _float(t)) is not None}
            last.update({k: v for k, v in values.items() if k not in ("epoch", "step")})
            ppl, epoch = values.get("val/ppl"), values.get("epoch")
            if ppl is not None and epoch is not None:
                curve[int(epoch)] = ppl
                validations.append({k: v for k, v in values.items() if k.startswith("val/")})
    if validations:
        best = min(validations, key=lambda v: v["val/ppl"])  # min() keeps the first of equals
        last.update(best)
        if validations[-1] is not best:
            last.update({f"last_epoch/{k}": v for k, v in validations[-1].items()})
    return sorted(curve.items()), last


def read_overrides(path: Path) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def load_run(path: Path, root: Path) -> Run:
    name = str(path.relative_to(root)) if path != root else path.name
    run = Run(path=path, name=name)
    if (path / ".hydra" / "overrides.yaml").is_file():
        run.overrides = read_overrides(path / ".hydra" / "overrides.yaml")
    csv_log = path / "csv" / "metrics.csv"
    if csv_log.is_file():
        run.curve, last = read_csv_log(csv_log)
        run.metrics.update(last)
        if run.curve:
            run.metrics["val/ppl_best"] = min(p for _, p in run.curve)
    summary_file = path / "metrics.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        saved = {k: float(v) for k, v in summary.get("metrics", {}).items()}
        if "checkpoint" not in summary and run.curve:  # older summaries: val/* of the last epoch
            saved = {k: v for k, v in saved.items() if not k.startswith("val/")}
        run.metrics.update(saved)
        run.n_params = summary.get("params")
        run.wall_time_s = summary.get("wall_time_s")
        run.status = "ok"
    if (path / "error.txt").is_file():
        run.status = "failed"
        run.error = (path / "error.txt").read_text().strip().splitlines()[0][:200]
    return run


def load_runs(root: Path) -> list[Run]:
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such directory", str(root))
    runs = [load_run(p, root) for p in find_runs(root)]
    if not runs:
        raise DataError(
            "no runs found (folders with .hydra/, metrics.json or csv/metrics.csv); give a "
            "sweep directory such as outputs/train/multiruns/<date> or outputs/train/sweeps/<study>",
            str(root),
        )
    return runs


# -- analysis -----------------------------------------------------------------------------------
def swept_params(runs: Sequence[Run]) -> list[str]:
    """Override keys whose values differ between runs (all keys when only one run)."""
    keys = sorted({k for r in runs for k in r.overrides if not IGNORED_KEYS.match(k)})
    if len(runs) < 2:
        return keys
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def rank(runs: Sequence[Run], metric: str, mode: str = "min") -> list[Run]:
    """Best first; runs without a finite objective (failed, diverged) last."""
    sign = 1.0 if mode == "min" else -1.0

    def key(run: Run) -> tuple[int, float, str]:
        value = run.value(metric)
        return (1, 0.0, run.name) if math.isnan(value) else (0, sign * value, run.name)

    return sorted(runs, key=key)


def parse_value(text: str | None) -> float | str | None:
    if text is None:
        return None
    number = _float(text)
    return number if number is not None and math.isfinite(number) else text


# -- formatting ---------------------------------------------------------------------------------
def fmt_number(value: float, pattern: str = "{:.2f}") -> str:
    return "—" if value is None or math.isnan(value) else pattern.format(value)


def fmt_params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def table_rows(runs: Sequence[Run], params: Sequence[str], metric: str) -> list[list[str]]:
    header = ["rank", "run", *params, metric, *(h for m, h, _ in COLUMNS if m != metric)]
    header += ["wall time", "parameters", "status"]
    rows = [header]
    for i, run in enumerate(runs, 1):
        status = run.status if not run.error else f"failed: {run.error}"
        cells = [str(i), run.name, *(run.overrides.get(k, "(default)") for k in params)]
        cells.append(fmt_number(run.value(metric), "{:.3f}"))
        cells += [fmt_number(run.value(m), f) for m, _, f in COLUMNS if m != metric]
        cells += [fmt_time(run.wall_time_s), fmt_params(run.n_params), status]
        rows.append(cells)
    return rows


_NUMERIC = re.compile(r"^(-?[\d.]+(e-?\d+)?[kM]?|[\d.]+s|\d+m\d\ds|—)$")


def to_markdown(rows: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    columns = list(zip(*rows[1:], strict=True)) if len(rows) > 1 else []
    align = ["---:" if col and all(_NUMERIC.match(c) for c in col) else "---" for col in columns]
    return "\n".join([line(rows[0]), line(align), *(line(r) for r in rows[1:])])


def to_html(title: str, rows: list[list[str]], plots: Sequence[Path], out: Path) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    images = "".join(
        f'<figure><img src="{html.escape(str(p.relative_to(out)))}" alt="{html.escape(p.stem)}">'
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in plots
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(2),th:nth-child(2){text-align:left}tr:nth-child(2) td{font-weight:bold}"
        "figure{display:inline-block;margin:1em}img{max-width:560px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{images}</body></html>"
    )


# -- plots --------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def plot_param(runs: Sequence[Run], param: str, metric: str, path: Path) -> Path | None:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg for .png

    points = [
        (parse_value(r.overrides.get(param, "(default)")), r.value(metric))
        for r in runs
        if not math.isnan(r.value(metric))
    ]
    if not points:
        return None
    fig = Figure(figsize=(5.5, 3.8), dpi=100)
    ax = fig.subplots()
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if all(isinstance(x, float) for x in xs):
        ax.scatter(xs, ys)
        positive = [x for x in xs if isinstance(x, float) and x > 0]
        if len(positive) == len(xs) and max(positive) / min(positive) >= 20:
            ax.set_xscale("log")
    else:
        categories = sorted(
            {str(x) for x in xs}, key=lambda c: (_float(c) is None, _float(c) or 0, c)
        )
        ax.scatter([categories.index(str(x)) for x in xs], ys)
        ax.set_xticks(range(len(categories)), categories)
    if min(ys) > 0 and max(ys) / min(ys) >= 20:
        ax.set_yscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{param} vs {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_curves(runs: Sequence[Run], params: Sequence[str], top: int, path: Path) -> Path | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    chosen = [r for r in runs if r.curve][:top]
    if not chosen:
        return None
    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.subplots()
    for run in chosen:
        epochs, ppl = zip(*run.curve, strict=True)
        label = ", ".join(f"{k.split('.')[-1]}={run.overrides.get(k)}" for k in params) or run.name
        ax.plot(epochs, ppl, marker="o", label=f"{run.name}: {label}"[:60])
    ax.set_xlabel("epoch")
    ax.set_ylabel("val/ppl")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = [p for run in chosen for _, p in run.curve]
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_yscale("log")
    ax.set_title(f"learning curves of the top {len(chosen)} runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# -- the report ---------------------------------------------------------------------------------
@dataclass
class Report:
    markdown: Path
    html: Path
    runs_csv: Path
    plots: list[Path]
    runs: list[Run]
    table: str


def build_report(
    root: str | Path,
    metric: str = "val/ppl_best",
    mode: str = "min",
    top: int = 5,
    out: str | Path | None = None,
) -> Report:
    root = Path(root)
    runs = rank(load_runs(root), metric, mode)
    study = read_study(root, runs)  # Optuna sweep: trial states, importances
    params = swept_params(runs)
    out = Path(out) if out else root / REPORT_DIR
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)

    plots = [
        p
        for param in params
        if (p := plot_param(runs, param, metric, plot_dir / f"param_{_safe(param)}.png"))
    ]
    curves = plot_curves(runs, params, top, plot_dir / "learning_curves.png")
    plots += [curves] if curves else []

    rows = table_rows(runs, params, metric)
    table = to_markdown(rows)
    n_ok = sum(r.status == "ok" for r in runs)
    title = (
        f"Runs under {root} ranked by {metric} ({'lowest' if mode == 'min' else 'highest'} first)"
    )
    summary = (
        f"{len(runs)} runs, {n_ok} finished; swept: {', '.join(params) or 'nothing'}. "
        "Metrics are each run's best checkpoint's (lowest val/ppl)."
    )
    images = "\n".join(f"![{p.stem}]({p.relative_to(out)})" for p in plots)
    markdown = out / "report.md"
    markdown.write_text(f"# {title}\n\n{summary}\n\n{table}\n\n{study.markdown()}{images}\n")
    html_file = out / "report.html"
    html_file.write_text(with_study(to_html(title, rows, plots, out), study))
    runs_csv = out / "runs.csv"
    with runs_csv.open("w", newline="") as f:
        csv.writer(f).writerows(
            [[*rows[0], "path"]]
            + [[*r, str(run.path)] for r, run in zip(rows[1:], runs, strict=True)]
        )
    return Report(markdown, html_file, runs_csv, plots, list(runs), table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dialoglab.report",
        description="Ranked table (Markdown, HTML) and PNG plots of the runs under a directory.",
    )
    parser.add_argument(
        "dir", help="a sweep or runs directory, e.g. outputs/train/multiruns/<date>"
    )
    parser.add_argument("--metric", default="val/ppl_best", help="objective to rank by")
    parser.add_argument("--mode", choices=("min", "max"), default="min")
    parser.add_argument("--top", type=int, default=5, help="runs in the learning-curve plot")
    parser.add_argument("--out", default=None, help="output folder (default: DIR/report)")
    args = parser.parse_args(argv)
    from dialoglab.experiment.console import print_error
    from dialoglab.experiment.runner import console

    try:
        report = build_report(args.dir, args.metric, args.mode, args.top, args.out)
    except DialoglabError as err:
        print_error(err)  # as text: a path or key with brackets is printed whole
        sys.exit(2)
    console.print(report.table, markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {report.markdown} and {report.html}", soft_wrap=True)
    for plot in report.plots:
        console.print(f"plot: {plot}", soft_wrap=True, highlight=False)
