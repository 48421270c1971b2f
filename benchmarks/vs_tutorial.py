"""gru_attn against the PyTorch chatbot tutorial's recipe: one training step, then a whole run.

Step: our parallel teacher-forced step (fp32 and bf16 autocast) against the tutorial's per-time-step
decoder loop (`tests/helpers/tutorial_baseline.py`) on the same weights and batch, after a check
that both compute the same loss. Whole run: training seconds until the validation loss on the
Cornell slice reaches a target, the tutorial's hyperparameters on both sides, run interleaved in
chunks so that a drift in the machine's load hits both.
"""

from __future__ import annotations

import copy
import functools
import random
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import pytorch_lightning as pl
import torch

from benchmarks.common import Figure, bare_trainer, synchronized, time_interleaved
from dialoglab import accel
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from tests.helpers.tutorial_baseline import TutorialTrainer, tutorial_batch
from tests.helpers.workloads import (
    GRUSize,
    cornell_datamodule,
    make_optimizer,
    mean_nll,
    our_step,
    synthetic_batch,
)

TARGET_VAL_LOSS = 4.4  # per token on the slice (vocabulary ~4.5k words)
EVAL_EVERY = 5  # training steps between validation-loss checks
OURS_CAP_S, TUTORIAL_CAP_S = 150.0, 300.0


def step_times(
    size: GRUSize, batch_size: int, device: torch.device, repeats: int, settle: int = 0
) -> dict[str, float]:
    """Median seconds per training step on `device` ("tutorial", "fp32", "bf16"): the tutorial's
    loop and our step (with train.py's default speed paths, `accel=auto`) in fp32 and under bf16
    autocast, same initial weights and batch, interleaved (`settle` untimed steps of the same
    side before each timed one)."""
    torch.manual_seed(0)
    base = GRUAttnSeq2Seq(size.config()).to(device).train()
    batch = synthetic_batch(size.vocab, batch_size, size.length, size.length)
    batch = {k: v.to(device) for k, v in batch.items()}
    tutorial = TutorialTrainer(copy.deepcopy(base))
    tut_batch = tutorial_batch(batch, base.config.pad_id)
    nets = {name: accel.for_training(copy.deepcopy(base)) for name in ("fp32", "bf16")}
    optimizers = {name: make_optimizer(net) for name, net in nets.items()}

    def ours(name: str) -> None:
        our_step(nets[name], optimizers[name], batch, bf16=name == "bf16")

    fns = {"tutorial": synchronized(lambda: tutorial.step(tut_batch), device)}
    fns.update({name: synchronized(lambda name=name: ours(name), device) for name in nets})
    times = time_interleaved(fns, repeats=repeats, warmup=2, settle=settle)
    return {name: median(ts) for name, ts in times.items()}


def step_figures(t: dict[str, float], prefix: str = "", targets: bool = False) -> list[Figure]:
    """Rows of `step_times`: milliseconds a step and our speed-ups (with their targets)."""
    rows = [Figure(f"{prefix}tutorial step loop (fp32)", round(t["tutorial"] * 1e3, 2), "ms")]
    for precision, target in (("fp32", 1.2), ("bf16", 2.0)):
        rows += [
            Figure(f"{prefix}our step {precision}", round(t[precision] * 1e3, 2), "ms"),
            Figure(f"{prefix}speed-up over the tutorial step, {precision}",
                   round(t["tutorial"] / t[precision], 2), "x",
                   target=(">=", target) if targets else None),
        ]  # fmt: skip
    return rows


def run_step(quick: bool = False) -> list[Figure]:
    size = GRUSize.for_run(quick)
    torch.manual_seed(0)
    check = GRUAttnSeq2Seq(size.config())  # same function: eval mode (no dropout), no update
    batch = synthetic_batch(size.vocab, size.batch, size.length, size.length)
    ours_loss = mean_nll(check, [batch])
    tutorial = TutorialTrainer(check).train(False)
    tutorial_loss = tutorial.step(tutorial_batch(batch, check.config.pad_id), update=False)
    t = step_times(size, size.batch, torch.device("cpu"), 3 if quick else 6, 0 if quick else 1)
    workload = f"H={size.hidden}, {size.layers}+{size.layers} layers, B={size.batch}, V={size.vocab}, S=T={size.length}"
    diff = abs(ours_loss - tutorial_loss) / ours_loss
    return [
        Figure("tutorial vs ours loss, same weights + batch", float(f"{diff:.2e}"), "rel. diff",
               target=("<=", 1e-4),
               note=f"ours {ours_loss:.5f}, tutorial {tutorial_loss:.5f} (fp32, dropout off); {workload}"),
        *step_figures(t, targets=True),
    ]  # fmt: skip


class _Clock(pl.Callback):
    """Training seconds (stopped during validation) until val/loss <= target or `cap` seconds;
    `between` runs at every validation, while the clock is stopped."""

    def __init__(self, target: float, cap: float, between: Callable[[], None]) -> None:
        self.target, self.cap, self.between = target, cap, between
        self.seconds, self.start = 0.0, 0.0
        self.reached: tuple[float, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.seconds + time.perf_counter() - self.start > self.cap:
            trainer.should_stop = True

    def on_validation_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.seconds += time.perf_counter() - self.start

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        if float(trainer.callback_metrics["val/loss"]) <= self.target and self.reached is None:
            self.reached = (self.seconds, trainer.global_step)
            trainer.should_stop = True
        self.between()
        self.start = time.perf_counter()


def _ours(dm: Any, size: GRUSize, clock: _Clock, max_steps: int) -> None:
    from dialoglab.models.seq2seq import Seq2SeqModule

    torch.manual_seed(1)
    module = Seq2SeqModule(
        dm.tokenizer,
        functools.partial(GRUAttnSeq2Seq, **size.net_settings()),
        functools.partial(torch.optim.Adam, lr=1e-4, fused=True),  # as conf/model/gru_attn.yaml
        decoder_lr_ratio=5.0,
        val_generate=0,
        n_samples=0,
    )
    accel.for_training(module.net)  # as train.py does (accel=auto)
    trainer = bare_trainer(precision="bf16-mixed", max_epochs=1000, max_steps=max_steps,
                           val_check_interval=EVAL_EVERY, check_val_every_n_epoch=None,
                           callbacks=[clock])  # fmt: skip
    trainer.fit(module, datamodule=dm)


class _TutorialRun:
    """The tutorial's loop on the same pairs, `EVAL_EVERY` random batches (drawn with
    replacement, as its `batch2TrainData` calls are) at a time, then scored untimed."""

    def __init__(self, dm: Any, size: GRUSize, target: float, max_steps: int) -> None:
        torch.manual_seed(1)
        self.net = GRUAttnSeq2Seq(size.config(vocab=len(dm.tokenizer))).train()
        self.trainer = TutorialTrainer(self.net)
        self.split, self.tokenizer = dm.splits["train"], dm.tokenizer
        self.val = list(dm.val_dataloader())
        self.rng = random.Random(1)
        self.batch, self.target, self.max_steps = size.batch, target, max_steps
        self.seconds, self.step = 0.0, 0
        self.reached: tuple[float, int] | None = None

    def chunk(self) -> None:
        if self.reached is not None or self.step >= self.max_steps:
            return
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
            start = time.perf_counter()
            for _ in range(EVAL_EVERY):
                indices = [self.rng.randrange(len(self.split)) for _ in range(self.batch)]
                batch = self.tokenizer.collate(self.split, indices)
                self.trainer.step(tutorial_batch(batch, self.tokenizer.pad_id))
                self.step += 1
            self.seconds += time.perf_counter() - start
            if mean_nll(self.net, self.val) <= self.target:
                self.reached = (self.seconds, self.step)


def _reached(reached: tuple[float, int] | None, seconds: float) -> tuple[Any, str, str]:
    if reached is None:
        return "not reached", "", f"not reached in {seconds:.0f} s of training"
    return round(reached[0], 1), "s", f"{reached[0]:.1f} s, {reached[1]} steps"


def run_whole(quick: bool = False) -> list[Figure]:
    size = GRUSize(hidden=32, layers=1, length=10, vocab=0) if quick else GRUSize()
    dm = cornell_datamodule(batch_size=size.batch)
    target = 8.4 if quick else TARGET_VAL_LOSS
    max_steps = EVAL_EVERY * 2 if quick else 10**9
    tutorial = _TutorialRun(dm, size, target, max_steps)
    clock = _Clock(target, 20 if quick else OURS_CAP_S, tutorial.chunk)  # interleaved chunks
    _ours(dm, size, clock, max_steps if quick else -1)
    ours_time = clock.reached[0] if clock.reached else OURS_CAP_S
    cap = 20 if quick else min(TUTORIAL_CAP_S, max(60.0, 4.0 * ours_time))
    while tutorial.reached is None and tutorial.seconds < cap and tutorial.step < max_steps:
        tutorial.chunk()  # the tutorial runs on alone, long enough to decide the 1/3 target

    ours_value, ours_unit, ours_note = _reached(clock.reached, clock.seconds)
    tut_value, tut_unit, tut_note = _reached(tutorial.reached, tutorial.seconds)
    pairs = len(dm.splits["train"])
    setting = f"val loss {target} per token, vocab {len(dm.tokenizer)}, {pairs} training pairs"
    if clock.reached is None:
        ratio, ratio_note = "n/a", "ours did not reach the target"
    elif tutorial.reached is None:
        ratio = round(clock.reached[0] / tutorial.seconds, 3)
        ratio_note = f"upper bound: the tutorial had not reached it after {tutorial.seconds:.0f} s"
    else:
        ratio, ratio_note = round(clock.reached[0] / tutorial.reached[0], 3), ""
    return [
        Figure("ours: time to target val loss", ours_value, ours_unit,
               note=f"{ours_note}; {setting}; checked every {EVAL_EVERY} steps"),
        Figure("tutorial recipe: time to target val loss", tut_value, tut_unit, note=tut_note),
        Figure("whole run: ours / tutorial time", ratio, "", target=("<=", 0.333),
               note=ratio_note),
    ]  # fmt: skip
