"""gru_attn workloads shared by the tests and `benchmarks/`: sizes, batches, one training step.

`our_step` is what `Seq2SeqModule.training_step` and Lightning's optimisation do for one batch,
written out so that it can be timed without the Trainer around it: the whole target in one
teacher-forced call, summed cross-entropy / real tokens, gradient clipping, Adam with the decoder
at `lr * decoder_lr_ratio`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq

REPO_ROOT = Path(__file__).resolve().parents[2]
CORNELL_SLICE = REPO_ROOT.parent / "shared" / "data" / "cornell-subset"
SOS = 1
IGNORE_INDEX = -100
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GRUSize:
    """The tutorial's workload: hidden 500, 2+2 layers, batch 64, vocab 8,000, length 10."""

    hidden: int = 500
    layers: int = 2
    batch: int = 64
    vocab: int = 8000
    length: int = 10

    @classmethod
    def for_run(cls, quick: bool) -> GRUSize:
        return cls(hidden=32, layers=1, batch=8, vocab=300, length=8) if quick else cls()

    def net_settings(self, dropout: float = 0.1) -> dict[str, Any]:
        """`model.net`'s settings at this size (Seq2SeqModule adds the vocabulary)."""
        return {
            "hidden_size": self.hidden,
            "encoder_n_layers": self.layers,
            "decoder_n_layers": self.layers,
            "dropout": dropout,
        }

    def config(self, vocab: int | None = None, dropout: float = 0.1) -> GRUAttnConfig:
        return GRUAttnConfig(vocab_size=vocab or self.vocab, **self.net_settings(dropout))


def synthetic_batch(vocab: int, batch: int, src_len: int, tgt_len: int, seed: int = 0) -> Batch:
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
    net: GRUAttnSeq2Seq, lr: float = 1e-4, decoder_lr_ratio: float = 5.0
) -> torch.optim.Adam:
    """Adam with the decoder at lr * ratio (Seq2SeqModule's groups), fused as conf/model does."""
    decoder = list(net.decoder.parameters())
    ids = {id(p) for p in decoder}
    others = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": others, "lr": lr}, {"params": decoder, "lr": lr * decoder_lr_ratio}]
    return torch.optim.Adam(groups, fused=True)


def autocast(bf16: bool, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """bf16 autocast on `device_type` (what precision=bf16-mixed does), or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def token_nll(net: GRUAttnSeq2Seq, batch: Batch) -> torch.Tensor:
    """Summed teacher-forced cross-entropy of the reply tokens (Seq2SeqModule.nll)."""
    return net.nll(batch["src"], batch["src_lengths"], batch["decoder_input"], batch["target"])


def our_step(
    net: GRUAttnSeq2Seq,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    bf16: bool = False,
    clip: float = 50.0,
    forward: Callable[[GRUAttnSeq2Seq, Batch], torch.Tensor] | None = None,
) -> float:
    """One training step: parallel teacher-forced forward, loss per token, backward, clip, Adam
    (autocast on the device the network's embedding lives on)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(bf16, net.embedding.weight.device.type):
        nll = (forward or token_nll)(net, batch)
    loss = nll / (batch["target"] != net.config.pad_id).sum().clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)  # as the Trainer clips
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def mean_nll(net: GRUAttnSeq2Seq, batches: list[Batch]) -> float:
    """Per-token validation loss in fp32 with dropout off (the module's val/loss)."""
    was_training = net.training
    net.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(token_nll(net, batch))
        tokens += int((batch["target"] != net.config.pad_id).sum())
    net.train(was_training)
    return total / max(tokens, 1)


def cornell_datamodule(path: str | Path | None = None, batch_size: int = 64, **kwargs: Any) -> Any:
    """The Cornell slice as conf/data/cornell.yaml reads it (the tutorial's MIN_COUNT 3 and
    MAX_LENGTH 10), set up for fitting."""
    from dialoglab.data.corpora.cornell import CornellReader
    from dialoglab.data.datamodule import DialogueDataModule
    from dialoglab.data.tokenization import WordTokenizer

    path = Path(path) if path else CORNELL_SLICE
    if not (path / "movie_lines.txt").is_file():
        raise FileNotFoundError(f"the Cornell slice is absent: {path}")
    dm = DialogueDataModule(
        functools.partial(CornellReader, download=False),
        WordTokenizer(min_count=3),
        path=str(path),
        max_length=10,
        batch_size=batch_size,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def full_logits_nll(module: Any, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """A causal LM's summed reply loss from its logits at every position (unlabelled: -100),
    as `GPT2LMHeadModel(labels=...)` computes it."""
    logits = module(batch)[:, :-1]
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
