"""Lightning overhead: GPT-2 scratch tokens/s through `pytorch_lightning.Trainer` vs a plain loop.

Both sides train copies of the same `CausalLMModule` on the same batches with the same optimizer
and clipping; the Trainer has no logger, checkpoints or progress bar, so what is measured is the
loop itself. The sides alternate step by step, so a burst of load hits both.
"""

from __future__ import annotations

import functools
import time
from statistics import median
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.common import REPO_ROOT, Figure, bare_trainer

IGNORE_INDEX = -100
Batch = dict[str, torch.Tensor]


def scratch_size(quick: bool) -> dict[str, int]:
    """n_layer/n_head/n_embd/n_positions/vocab_size of conf/model/gpt2_scratch.yaml (tiny when
    quick)."""
    if quick:
        return {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 500}
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "model" / "gpt2_scratch.yaml")
    size = {key: int(cfg[key]) for key in ("n_layer", "n_head", "n_embd", "n_positions")}
    return {**size, "vocab_size": int(cfg.tokenizer.vocab_size)}


class StubTokenizer:
    """What CausalLMModule reads from a fitted tokenizer to build and run a scratch model."""

    fitted = True
    bos_id, eos_id, pad_id, persona_id, user_id, bot_id = 0, 1, 2, 3, 4, 5

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.vocab_size, self.max_length = vocab_size, max_length

    def __len__(self) -> int:
        return self.vocab_size

    def state_dict(self) -> dict[str, Any]:
        return {}


def make_module(size: dict[str, int], max_length: int, dropout: float = 0.1, **options: Any) -> Any:
    """Our CausalLMModule at `size` (`options` such as compile=True go to its constructor)."""
    from dialoglab.models.causal_lm import CausalLMModule

    return CausalLMModule(
        StubTokenizer(size["vocab_size"], max_length),  # type: ignore[arg-type]
        functools.partial(torch.optim.AdamW, lr=5e-4, betas=(0.9, 0.98)),
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


def make_batches(n: int, batch: int, length: int, vocab: int) -> list[Batch]:
    """Full rows of random tokens; the loss is on the second half of each row (the "reply")."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = torch.randint(6, vocab, (batch, length), generator=g)
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


def train_step(module: Any, optimizer: torch.optim.Optimizer, batch: Batch, clip: float) -> None:
    """What the Trainer does for one batch: loss per token, backward, clip, step, zero_grad."""
    loss = module.nll(batch, module.label_smoothing) / module.count_tokens(batch).clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def paired_steps(
    trainer_module: Any, plain_module: Any, loader: DataLoader, clip: float
) -> tuple[list[float], list[float]]:
    """(Trainer seconds per step, plain-loop seconds per step): `trainer_module` trains through
    pytorch_lightning.Trainer over `loader`, and after each of its steps (in `on_train_batch_end`)
    `plain_module` takes one hand-written step on the loader's next batch. A Trainer step is the
    time from the end of that plain step to the next `on_train_batch_end`, hooks included."""
    optimizer = plain_module.configure_optimizers()  # scheduler=None: the optimizer alone
    plain_module.train()
    plain_batches = iter(loader)
    trainer_times: list[float] = []
    plain_times: list[float] = []

    class Alternate(pl.Callback):
        mark = 0.0  # when the Trainer's current step began: the end of the last plain step

        def on_train_epoch_start(self, *args: Any) -> None:
            self.mark = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            start = time.perf_counter()
            trainer_times.append(start - self.mark)
            with torch.enable_grad():
                train_step(plain_module, optimizer, next(plain_batches), clip)
            self.mark = time.perf_counter()
            plain_times.append(self.mark - start)

    trainer = bare_trainer(precision="32-true", gradient_clip_val=clip, max_epochs=1,
                           limit_val_batches=0, callbacks=[Alternate()])  # fmt: skip
    trainer.fit(trainer_module, train_dataloaders=loader)
    return trainer_times, plain_times


def run(quick: bool = False) -> list[Figure]:
    size = scratch_size(quick)
    batch, length = (4, 32) if quick else (16, 128)
    warmup, steps, rounds = (1, 3, 1) if quick else (3, 40, 2)  # pairs of steps a round
    batches = make_batches(warmup + steps, batch, length, size["vocab_size"])
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    torch.manual_seed(0)
    initial = make_module(size, length).state_dict()
    times: dict[str, list[float]] = {"plain": [], "lightning": []}
    ratios = []
    for _ in range(rounds):  # fresh runs of both sides from the same weights
        sides = [make_module(size, length) for _ in range(2)]
        for side in sides:
            side.load_state_dict(initial)
        lightning_times, plain_times = paired_steps(*sides, loader, clip=50.0)
        times["lightning"] += lightning_times[warmup:]
        times["plain"] += plain_times[warmup:]
        ratios.append(median(plain_times[warmup:]) / median(lightning_times[warmup:]))
    tokens = batch * length
    plain, lightning = median(times["plain"]), median(times["lightning"])
    what = (
        f"{size['n_layer']} layers, {size['n_embd']} wide, vocab {size['vocab_size']}; batch "
        f"{batch} x {length} tokens; median of {rounds} x {steps} steps a side"
    )
    return [
        Figure("GPT-2 scratch, plain loop", round(tokens / plain), "tokens/s", note=what),
        Figure("GPT-2 scratch, lightning.Trainer", round(tokens / lightning), "tokens/s"),
        Figure(
            "Lightning / plain loop throughput",
            round(plain / lightning, 3),
            target=(">=", 0.97),
            note="per round: " + ", ".join(f"{r:.3f}" for r in ratios),
        ),
    ]
