"""Decoding quality of a trained checkpoint on its validation split: which decoding to chat with.

    python -m benchmarks.decoding --ckpt PATH [--data DIR] [--limit N] [--timed N] [--out FILE]

One row per decoding (and chat's `default` preset): the metrics val/test report
(`dialoglab.metrics.GenerationMetrics`) and the median milliseconds of one reply, the model held
as chat holds it (`quantize=auto`). docs/decoding.md shows the table and what chose the default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Figure, percentile

# row label -> preset of conf/decoding (sampling seeded for repeatable rows); chat's default last
DECODINGS = {
    "greedy": "greedy",
    "beam5, no-repeat 3": "beam",
    "sample (T 0.8, top-k 40, top-p 0.95)": "sample",
    "nucleus (top-p 0.9)": "nucleus",
    "beam10 + MMI (lambda 0.5)": "beam_mmi",
}
COLUMNS = ("bleu", "distinct_2", "entropy_4", "unk_rate", "top_reply_share", "mean_length")
DISTINCT_2_TARGET = 0.25  # issue 27's target for the chat default


def load(ckpt_path: str | Path, data_path: str | None, quantize: str = "auto") -> tuple[Any, Any]:
    """The checkpoint's model held as chat holds it, and its datamodule set up (val split)."""
    import hydra
    from omegaconf import OmegaConf

    from dialoglab import accel
    from dialoglab.experiment.checkpoint import restore_model

    restored = restore_model(ckpt_path)
    model = accel.for_inference(restored.model, quantize)
    data_cfg = OmegaConf.merge(restored.cfg.data, {"path": data_path} if data_path else {})
    datamodule = hydra.utils.instantiate(data_cfg, tokenizer=model.tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return model, datamodule


def decoding_config(preset: str) -> Any:
    """The preset; sampling without a seed gets seed 0 (repeatable rows)."""
    from dialoglab.generation import DecodingConfig

    config = DecodingConfig.from_any(preset)
    if config.effective_strategy == "sample" and config.seed is None:
        config = config.replace(seed=0)
    return config


def describe(config: Any) -> str:
    """A short label of a decoding config, e.g. "sample (T 0.7, top-k 40, top-p 0.9)"."""
    strategy = config.effective_strategy
    if strategy == "sample":
        return f"sample (T {config.temperature:g}, top-k {config.top_k}, top-p {config.top_p:g})"
    if strategy == "beam":
        mmi = f" + MMI (lambda {config.mmi_lambda:g})" if config.mmi_lambda else ""
        return f"beam{config.num_beams}{mmi}"
    return "greedy"


def score(model: Any, batches: list[dict[str, torch.Tensor]], decoding: Any) -> dict[str, float]:
    """GenerationMetrics of the replies to every example of `batches` under `decoding`."""
    from dialoglab.metrics import GenerationMetrics

    metrics = GenerationMetrics()
    with torch.no_grad():
        for batch in batches:
            ids = model.generate_ids(*model.reply_inputs(batch), decoding=decoding)
            metrics.add(model.decode_rows(ids), model.reference_texts(batch))
    return metrics.summary()


def latency_ms(model: Any, batches: list[dict[str, torch.Tensor]], decoding: Any, n: int) -> float:
    """Median milliseconds of one reply (batch of one) over the first `n` examples."""
    inputs = list(model.reply_inputs(batches[0]))
    times = []
    with torch.no_grad():
        for i in range(min(n, inputs[0].size(0))):
            one = [t[i : i + 1] for t in inputs]
            start = time.perf_counter()
            model.generate_ids(*one, decoding=decoding)
            times.append((time.perf_counter() - start) * 1000)
    return percentile(times, 50) if times else float("nan")


def validation_batches(datamodule: Any, limit: int) -> list[dict[str, torch.Tensor]]:
    """The validation loader's batches up to `limit` examples (the last one cut to fit)."""
    batches, seen = [], 0
    for batch in datamodule.val_dataloader():
        size = next(iter(batch.values())).size(0)
        take = min(size, limit - seen)
        batches.append({k: v[:take] for k, v in batch.items()} if take < size else batch)
        seen += take
        if seen >= limit:
            break
    return batches


def table(
    ckpt_path: str | Path,
    data_path: str | None = None,
    limit: int = 1000,
    timed: int = 50,
    quantize: str = "auto",
) -> list[dict[str, Any]]:
    """One dict per decoding row: its label, preset, the COLUMNS and p50_ms."""
    model, datamodule = load(ckpt_path, data_path, quantize)
    batches = validation_batches(datamodule, limit)
    n = sum(next(iter(b.values())).size(0) for b in batches)
    rows = []
    default = "default: " + describe(decoding_config("default"))
    for label, preset in {**DECODINGS, default: "default"}.items():
        decoding = decoding_config(preset)
        row = {"decoding": label, "preset": preset, "examples": n}
        row.update(
            score(model, batches, decoding), p50_ms=latency_ms(model, batches, decoding, timed)
        )
        rows.append(row)
        print(markdown([row], header=not rows[:-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], header: bool = True) -> str:
    """The rows as a Markdown table (BLEU x100, as val/test report it)."""
    lines = []
    if header:
        names = ("decoding", "BLEU", "distinct-2", "entropy_4", "unk_rate", "top reply", "length")
        lines += ["| " + " | ".join((*names, "p50 ms")) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        cells = [row["decoding"], f"{row['bleu']:.2f}"]
        cells += [f"{row[k]:.3f}" for k in COLUMNS[1:5]] + [f"{row['mean_length']:.1f}"]
        lines.append("| " + " | ".join([*cells, f"{row['p50_ms']:.1f}"]) + " |")
    return "\n".join(lines)


def run(quick: bool = False, ckpt_path: str | None = None) -> list[Figure]:
    """Rows for `python -m benchmarks --only decoding --ckpt PATH`: per decoding, distinct-2,
    unk_rate, BLEU and p50 reply latency."""
    from benchmarks.chat_latency import checkpoint

    path = checkpoint(ckpt_path)
    if path is None:
        note = "no checkpoint: pass --ckpt PATH or train one"
        return [Figure("decoding distinct-2 (default)", None, note=note)]
    figures = []
    for row in table(path, limit=100 if quick else 1000, timed=5 if quick else 50):
        name, note = row["decoding"], f"{row['examples']} val examples, {path.name}"
        default = row["preset"] == "default"  # held to the targets chat's replies must meet
        figures += [
            Figure(f"decoding distinct-2 ({name})", round(row["distinct_2"], 4), note=note,
                   target=(">=", DISTINCT_2_TARGET) if default else None),
            Figure(f"decoding unk_rate ({name})", round(row["unk_rate"], 4), note=note,
                   target=("<=", 0.0) if default else None),
            Figure(f"decoding BLEU ({name})", round(row["bleu"], 2), note=note),
            Figure(f"decoding p50 ({name})", round(row["p50_ms"], 2), "ms", note=note),
        ]  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--data", default=None, help="corpus folder (default: the run's)")
    parser.add_argument("--limit", type=int, default=1000, help="validation examples scored")
    parser.add_argument("--timed", type=int, default=50, help="single replies timed")
    parser.add_argument("--quantize", default="auto", help="auto | none | int8 | bf16")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = table(args.ckpt, args.data, args.limit, args.timed, args.quantize)
    text = markdown(rows)
    print(f"\n{rows[0]['examples']} validation examples, {args.ckpt}\n\n{text}")
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
