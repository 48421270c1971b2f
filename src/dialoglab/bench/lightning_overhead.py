"""3. Lightning overhead: GPT-2 scratch tokens/s through `lightning.Trainer` vs a plain loop.

Both train copies of the same initial model (`CausalLMModule` at `conf/model/gpt2_scratch.yaml`'s
size; a minimal LightningModule around `transformers.GPT2LMHeadModel` when that module cannot be
built) on the very same batches, read from the same DataLoader, with the same optimizer (AdamW,
no scheduler) and gradient clipping. The Trainer runs as our trainer config does (fp32, clip 50)
with no logger, checkpointing or progress bar: what is measured is the training loop itself.

The two sides alternate step by step (`paired_steps`): after each Trainer step, inside its
`on_train_batch_end`, one plain-loop step of the other copy on the same batch. A Trainer step is
the time from the end of that plain step to the next `on_train_batch_end` (data loading and
every hook included); a plain step is its own batch fetch and update. So a burst of load on this
shared machine hits both sides within a second, not one side's whole run (with runs of 8-16
steps a side, one round's ratio moved 0.82-1.12 within one `make bench`). The ratio is of the
medians over all pairs, after warm-up pairs, in fresh runs from the same weights (`ROUNDS`).
"""

from __future__ import annotations

import functools
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


def make_module(
    size: dict[str, int], max_length: int, dropout: float = 0.1, **options: Any
) -> tuple[Any, str]:
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
            dropout=dropout,
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


def paired_steps(
    trainer_module: Any, plain_module: Any, loader: DataLoader, clip: float
) -> tuple[list[float], list[float]]:
    """(Trainer seconds per step, plain-loop seconds per step), the sides alternating step by
    step: `trainer_module` trains through lightning.Trainer over `loader`, and after each of its
    steps (in `on_train_batch_end`) `plain_module` takes one hand-written step on the loader's
    next batch; neither side's time includes the other's."""
    optimizer = optimizer_of(plain_module)
    plain_module.train()
    plain_batches = iter(loader)
    trainer_times: list[float] = []
    plain_times: list[float] = []

    class Alternate(pl.Callback):
        mark = 0.0  # when the Trainer's current step began: the end of the last plain step

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.mark = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            start = time.perf_counter()
            trainer_times.append(start - self.mark)
            with torch.enable_grad():
                train_step(plain_module, optimizer, next(plain_batches), clip)
            self.mark = time.perf_counter()
            plain_times.append(self.mark - start)

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
        callbacks=[Alternate()],
    )
    trainer.fit(trainer_module, train_dataloaders=loader)
    return trainer_times, plain_times


ROUNDS = 2  # fresh runs of both sides from the same weights


def run(quick: bool = False) -> list[Figure]:
    size = scratch_size(quick)
    batch, length = (4, 32) if quick else (16, 128)
    warmup, steps = (1, 3) if quick else (3, 40)  # pairs of steps a round
    rounds = 1 if quick else ROUNDS
    clip = 50.0
    batches = make_batches(warmup + steps, batch, length, size["vocab_size"])
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the same batches, as they are
    set_seed(0)
    module, kind = make_module(size, length)
    initial = {k: v.clone() for k, v in module.state_dict().items()}

    times: dict[str, list[float]] = {"plain": [], "lightning": []}
    ratios = []
    for _ in range(rounds):
        sides = {}
        for name in ("lightning", "plain"):
            sides[name], _ = make_module(size, length)
            sides[name].load_state_dict(initial)
        lightning_times, plain_times = paired_steps(
            sides["lightning"], sides["plain"], loader, clip
        )
        times["lightning"] += lightning_times[warmup:]
        times["plain"] += plain_times[warmup:]
        ratios.append(median(plain_times[warmup:]) / median(lightning_times[warmup:]))

    tokens = batch * length
    plain_step = median(times["plain"])
    lightning_step = median(times["lightning"])
    params = sum(p.numel() for p in module.parameters())
    what = (
        f"{kind}; {size['n_layer']} layers, {size['n_embd']} wide, vocab {size['vocab_size']}, "
        f"{params / 1e6:.1f} M params; batch {batch} x {length} tokens, median of "
        f"{rounds} x {steps} steps a side after warm-up, alternating step by step"
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
