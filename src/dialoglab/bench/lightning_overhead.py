"""3. Lightning overhead: GPT-2 scratch tokens/s through `lightning.Trainer` vs a plain loop.

Both train copies of the same initial model (`CausalLMModule` at `conf/model/gpt2_scratch.yaml`'s
size; a minimal LightningModule around `transformers.GPT2LMHeadModel` when that module cannot be
built) on the very same batches, read from the same DataLoader, with the same optimizer (AdamW,
no scheduler) and gradient clipping. The Trainer runs as our trainer config does (fp32, clip 50)
with no logger, checkpointing or progress bar: what is measured is the training loop itself.
Per-step times are taken between consecutive `on_train_batch_end` calls (data loading and every
hook included) and between consecutive iterations of the plain loop, after warm-up steps. The two
sides run in interleaved rounds (plain, Trainer; then Trainer, plain; ...), each run on a fresh
module from the same initial weights; the ratio is of the medians over all rounds.
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from dialoglab.bench.common import REPO_ROOT, Figure, median, set_seed

IGNORE_INDEX = -100


def scratch_size(quick: bool) -> dict[str, int]:
    """n_layer/n_head/n_embd/n_positions of conf/model/gpt2_scratch.yaml (tiny when quick)."""
    if quick:
        return {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 500}
    size = {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256, "vocab_size": 8000}
    path = REPO_ROOT / "conf" / "model" / "gpt2_scratch.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        for key in ("n_layer", "n_head", "n_embd", "n_positions"):
            if key in cfg:
                size[key] = int(cfg[key])
        if "tokenizer" in cfg and "vocab_size" in cfg.tokenizer:
            size["vocab_size"] = int(cfg.tokenizer.vocab_size)
    return size


def scratch_config(size: dict[str, int], **extra: Any) -> Any:
    """A `GPT2Config` of `scratch_size`'s size (plus `extra` fields such as special ids)."""
    from transformers import GPT2Config

    keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    return GPT2Config(**{key: size[key] for key in keys}, **extra)


class _StubTokenizer:
    """What CausalLMModule reads from a fitted tokenizer when it builds a scratch model."""

    fitted = True
    bos_id, eos_id, pad_id = 0, 1, 2

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.vocab_size = vocab_size
        self.max_length = max_length

    def __len__(self) -> int:
        return self.vocab_size

    def state_dict(self) -> dict[str, Any]:
        return {}


def make_module(size: dict[str, int], max_length: int, **options: Any) -> tuple[Any, str]:
    """(LightningModule, which one): our CausalLMModule (with `options` such as compile=True),
    else, without options, a minimal wrapper."""
    optimizer = functools.partial(torch.optim.AdamW, lr=5e-4, betas=(0.9, 0.98))
    try:
        from dialoglab.models.causal_lm import CausalLMModule

        module = CausalLMModule(
            _StubTokenizer(size["vocab_size"], max_length),  # type: ignore[arg-type]
            optimizer,
            n_layer=size["n_layer"],
            n_head=size["n_head"],
            n_embd=size["n_embd"],
            n_positions=size["n_positions"],
            dropout=0.1,
            scheduler=None,
            val_generate=0,
            n_samples=0,
            **options,
        )
        return module, "dialoglab CausalLMModule"
    except Exception:  # the GPT-2 module changed or is absent: measure the framework anyway
        if options:
            raise
        return _MinimalGPT2(size, optimizer), "minimal LightningModule around GPT2LMHeadModel"


class _MinimalGPT2(pl.LightningModule):
    def __init__(self, size: dict[str, int], optimizer: Any) -> None:
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.net = GPT2LMHeadModel(scratch_config(size))
        self.optimizer_factory = optimizer
        self.label_smoothing = 0.0

    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        logits = self.net(input_ids=batch["input_ids"], use_cache=False).logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.nll(batch) / self.count_tokens(batch).clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(self.parameters())


def make_batches(n: int, batch: int, length: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    """Full rows of random tokens; the loss is on the second half of each row (the "reply")."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (batch, length), generator=g)
        labels = ids.clone()
        labels[:, : length // 2] = IGNORE_INDEX
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.full_like(ids, 4),
                "labels": labels,
                "n_words": torch.ones(batch, dtype=torch.long),
                "index": torch.arange(batch) + 10_000,
            }
        )
    return batches


def optimizer_of(module: Any) -> torch.optim.Optimizer:
    """The optimizer `module.configure_optimizers()` builds (without its scheduler)."""
    optimizer = module.configure_optimizers()
    return optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer


def train_step(module: Any, optimizer: torch.optim.Optimizer, batch: dict, clip: float) -> None:
    """What the Trainer does for one batch: loss per token, backward, clip, step, zero_grad."""
    loss = module.nll(batch, module.label_smoothing) / module.count_tokens(batch).clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def plain_loop(module: Any, loader: DataLoader, clip: float) -> list[float]:
    """Seconds per step of a hand-written loop doing what the Trainer does for each batch."""
    optimizer = optimizer_of(module)
    module.train()
    ends = [time.perf_counter()]
    for batch in loader:
        train_step(module, optimizer, batch, clip)
        ends.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(ends)]


def trainer_loop(module: Any, loader: DataLoader, clip: float) -> list[float]:
    """Seconds per step through lightning.Trainer (between consecutive on_train_batch_end)."""

    class Stamps(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.ends.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append(time.perf_counter())

    stamps = Stamps()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        gradient_clip_val=clip,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[stamps],
    )
    trainer.fit(module, train_dataloaders=loader)
    ends = stamps.ends
    return [b - a for a, b in itertools.pairwise(ends)]


ROUNDS = 4  # rounds of (plain loop, Trainer), the order alternating: A B, B A, A B, B A


def run(quick: bool = False) -> list[Figure]:
    size = scratch_size(quick)
    batch, length = (4, 32) if quick else (16, 128)
    # per run; ROUNDS runs a side. 16 timed steps a run: with 8, one burst of the neighbours'
    # load moved a round's ratio by 0.1-0.2 (rounds 0.82-0.97 in one `make bench`, 0.95-1.12
    # in another).
    warmup, steps = (1, 3) if quick else (3, 16)
    rounds = 1 if quick else ROUNDS
    clip = 50.0
    batches = make_batches(warmup + steps, batch, length, size["vocab_size"])
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the same batches, as they are
    set_seed(0)
    module, kind = make_module(size, length)
    initial = {k: v.clone() for k, v in module.state_dict().items()}

    # Interleaved rounds, each run from the same weights on a fresh module: a drift of the
    # machine's load hits both sides alike (one run each read 0.95-1.07 between repeats).
    times: dict[str, list[float]] = {"plain": [], "lightning": []}
    ratios = []
    for round_ in range(rounds):
        order = ("plain", "lightning") if round_ % 2 == 0 else ("lightning", "plain")
        this_round = {}
        for name in order:
            fresh, _ = make_module(size, length)
            fresh.load_state_dict(initial)
            loop = plain_loop if name == "plain" else trainer_loop
            this_round[name] = loop(fresh, loader, clip)[warmup:]
            times[name] += this_round[name]
        ratios.append(median(this_round["plain"]) / median(this_round["lightning"]))

    tokens = batch * length
    plain_step = median(times["plain"])
    lightning_step = median(times["lightning"])
    params = sum(p.numel() for p in module.parameters())
    what = (
        f"{kind}; {size['n_layer']} layers, {size['n_embd']} wide, vocab {size['vocab_size']}, "
        f"{params / 1e6:.1f} M params; batch {batch} x {length} tokens, median of "
        f"{rounds} x {steps} steps a side after warm-up, interleaved"
    )
    return [
        Figure("GPT-2 scratch, plain loop", round(tokens / plain_step), "tokens/s", note=what),
        Figure("GPT-2 scratch, lightning.Trainer", round(tokens / lightning_step), "tokens/s"),
        Figure(
            "Lightning / plain loop throughput",
            round(plain_step / lightning_step, 3),
            "",
            target=(">=", 0.97),
            note="per round: " + ", ".join(f"{r:.3f}" for r in ratios),
        ),
    ]
