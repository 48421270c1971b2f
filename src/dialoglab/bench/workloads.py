"""Models, batches and training steps the benchmarks share (gru_attn at the issue's sizes).

`our_step` is what `Seq2SeqModule.training_step` + Lightning's optimisation do for one batch,
written out so that it can be timed without the Trainer around it: the whole target in one
teacher-forced decoder call, summed cross-entropy / real tokens, gradient clipping, Adam with the
decoder at `lr * decoder_lr_ratio`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dialoglab.bench.common import CORNELL_SLICE
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq
from dialoglab.models.dialogue_module import clip_grad_norm

PAD, SOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class GRUSize:
    """The issue's utilisation workload: hidden 500, 2+2 layers, batch 64, vocab ~8k, length 10."""

    hidden: int = 500
    layers: int = 2
    batch: int = 64
    vocab: int = 8000
    length: int = 10

    @classmethod
    def for_run(cls, quick: bool) -> GRUSize:
        # quick: 8 x 8 = 64 tokens a side, a whole row bucket (row_buckets.ROWS) as at full size
        # (640), so the products carry exactly the counted FLOPs, no zero rows
        return cls(hidden=32, layers=1, batch=8, vocab=300, length=8) if quick else cls()

    def config(self, vocab: int | None = None, dropout: float = 0.1) -> GRUAttnConfig:
        return GRUAttnConfig(
            vocab_size=vocab or self.vocab,
            hidden_size=self.hidden,
            encoder_n_layers=self.layers,
            decoder_n_layers=self.layers,
            dropout=dropout,
        )


def synthetic_batch(
    vocab: int, batch: int, src_len: int, tgt_len: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A full-length batch (no padding) in the DataModule's layout: src, decoder_input, target."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, vocab, (batch, src_len), generator=g)
    reply = torch.randint(5, vocab, (batch, tgt_len), generator=g)
    decoder_input = torch.cat([torch.full((batch, 1), SOS), reply[:, :-1]], dim=1)
    return {
        "src": src,
        "src_lengths": torch.full((batch,), src_len),
        "decoder_input": decoder_input,
        "target": reply,
    }


def make_optimizer(
    net: GRUAttnSeq2Seq, lr: float = 1e-4, decoder_lr_ratio: float = 5.0, fused: bool = True
) -> torch.optim.Adam:
    """Adam with the decoder at lr * ratio, as Seq2SeqModule.param_groups, fused as in
    conf/model/gru_attn.yaml."""
    decoder = list(net.decoder.parameters())
    ids = {id(p) for p in decoder}
    others = [p for p in net.parameters() if id(p) not in ids]
    return torch.optim.Adam(
        [{"params": others, "lr": lr}, {"params": decoder, "lr": lr * decoder_lr_ratio}],
        fused=fused,
    )


def autocast(bf16: bool, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """bf16 autocast on `device_type` (what Lightning's precision=bf16-mixed does), or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def token_nll(net: GRUAttnSeq2Seq, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Seq2SeqModule.nll: summed cross-entropy of the reply tokens (logits upcast to float)."""
    from dialoglab.models.seq2seq import reply_nll

    return reply_nll(net, batch)


def our_step(
    net: GRUAttnSeq2Seq,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    bf16: bool = False,
    clip: float = 50.0,
    forward: Any = None,
    phases: dict[str, list[float]] | None = None,
) -> float:
    """One training step: parallel teacher-forced forward, loss per token, backward, clip, Adam.
    With `phases`, each phase's seconds are appended under "forward", "backward", "gradient
    norm" and "optimizer"."""
    marks = [time.perf_counter()]
    optimizer.zero_grad(set_to_none=True)
    with autocast(bf16, net.embedding.weight.device.type):
        nll = (forward or token_nll)(net, batch)
    tokens = (batch["target"] != net.config.pad_id).sum().clamp(min=1)
    loss = nll / tokens
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    clip_grad_norm(list(net.parameters()), clip)  # as DialogueModule.configure_gradient_clipping
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    if phases is not None:
        for name, start, end in zip(STEP_PHASES, marks[:-1], marks[1:], strict=True):
            phases.setdefault(name, []).append(end - start)
    return float(loss.detach())


STEP_PHASES = ("forward", "backward", "gradient norm", "optimizer")


@torch.no_grad()
def mean_nll(net: GRUAttnSeq2Seq, batches: list[dict[str, torch.Tensor]]) -> float:
    """Per-token validation loss in fp32 with dropout off (the module's val/loss)."""
    was_training = net.training
    net.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(token_nll(net, batch))
        tokens += int((batch["target"] != net.config.pad_id).sum())
    net.train(was_training)
    return total / max(tokens, 1)


# -----------------------------------------------------------------------------
# The Cornell slice through our DataModule


def cornell_datamodule(
    path: str | Path | None = None,
    batch_size: int = 64,
    bucket: bool = False,
    min_count: int = 3,
    max_length: int = 10,
    cache_dir: str | None = None,
    **kwargs: Any,
):
    """The shared Cornell slice as the cornell data config reads it (tutorial MIN_COUNT/MAX_LENGTH)."""
    from dialoglab.data.corpora.cornell import CornellReader
    from dialoglab.data.datamodule import DialogueDataModule
    from dialoglab.data.tokenization import WordTokenizer

    path = Path(path) if path else CORNELL_SLICE
    if not (path / "movie_lines.txt").is_file():
        raise FileNotFoundError(f"the Cornell slice is absent: {path}")
    options: dict[str, Any] = {"bucket_by_length": bucket} if bucket else {}
    dm = DialogueDataModule(
        functools.partial(CornellReader, download=False),
        WordTokenizer(min_count=min_count),
        path=str(path),
        max_length=max_length,
        batch_size=batch_size,
        cache_dir=cache_dir,
        **options,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def take_batches(loader: Any, n: int) -> list[dict[str, torch.Tensor]]:
    """The first n batches of a loader, cycling through epochs when it has fewer."""
    batches: list[dict[str, torch.Tensor]] = []
    while len(batches) < n:
        before = len(batches)
        for batch in loader:
            batches.append(batch)
            if len(batches) == n:
                break
        if len(batches) == before:
            raise ValueError("the loader yields no batch")
    return batches
