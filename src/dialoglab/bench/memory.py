"""6. Memory: peak RSS of a gru_attn training epoch on the Cornell slice (and its wall time).

One epoch through `lightning.Trainer` + `Seq2SeqModule` (hidden 500, 2+2 layers, batch 64, the
cornell data config) in a fresh child process, whose peak RSS (ru_maxrss) covers imports, data
and training. Run twice: with the defaults (fp32, random batches) and with our best settings
(`trainer.precision=bf16-mixed`, `data.bucket_by_length=true`), so the epoch times compare too.
Validation is skipped: this is the training epoch.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import lightning.pytorch as pl
import torch

from dialoglab.bench.common import CORNELL_SLICE, Figure, run_isolated


def train_epoch(precision: str, bucket: bool, quick: bool) -> dict[str, Any]:
    """(child) One training epoch on the slice; seconds, steps and RSS."""
    from dialoglab.bench.common import rss_mb
    from dialoglab.bench.workloads import cornell_datamodule
    from dialoglab.models.seq2seq import Seq2SeqModule

    pl.seed_everything(0, verbose=False)
    dm = cornell_datamodule(batch_size=64, bucket=bucket)
    rss_data = rss_mb()
    module = Seq2SeqModule(
        dm.tokenizer,
        functools.partial(torch.optim.Adam, lr=1e-4, fused=True),  # as conf/model/gru_attn.yaml
        hidden_size=32 if quick else 500,
        encoder_n_layers=1 if quick else 2,
        decoder_n_layers=1 if quick else 2,
        val_generate=0,
        n_samples=0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        gradient_clip_val=50.0,
        max_epochs=1,
        limit_train_batches=5 if quick else None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return {
        "seconds": time.perf_counter() - start,
        "steps": trainer.global_step,
        "rss_after_data_mb": rss_data,
        "params": sum(p.numel() for p in module.parameters()),
        "train_pairs": len(dm.splits["train"]),
    }


def run(quick: bool = False) -> list[Figure]:
    if not (CORNELL_SLICE / "movie_lines.txt").is_file():
        return [
            Figure("gru_attn epoch peak RSS", None, note=f"no Cornell slice at {CORNELL_SLICE}")
        ]
    default = run_isolated(
        "dialoglab.bench.memory:train_epoch",
        {"precision": "32-true", "bucket": False, "quick": quick},
    )
    best = run_isolated(
        "dialoglab.bench.memory:train_epoch",
        {"precision": "bf16-mixed", "bucket": True, "quick": quick},
    )
    what = (
        f"{default['steps']} steps over {default['train_pairs']} pairs, "
        f"{default['params'] / 1e6:.1f} M params"
    )
    return [
        Figure(
            "gru_attn epoch on the slice: peak RSS (fp32)",
            round(default["peak_rss_mb"]),
            "MiB",
            note=f"{what}; {default['rss_after_imports_mb']:.0f} MiB after imports, "
            f"{default['rss_after_data_mb']:.0f} MiB with the data loaded",
        ),
        Figure(
            "gru_attn epoch on the slice: peak RSS (bf16-mixed + buckets)",
            round(best["peak_rss_mb"]),
            "MiB",
        ),
        Figure("gru_attn epoch time (fp32, random batches)", round(default["seconds"], 1), "s"),
        Figure(
            "gru_attn epoch time (bf16-mixed + bucket_by_length)",
            round(best["seconds"], 1),
            "s",
            note=f"{default['seconds'] / best['seconds']:.2f}x faster than the defaults",
        ),
    ]
