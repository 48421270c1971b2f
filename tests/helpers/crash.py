"""Test-only callbacks that crash a training process the hard way (SIGKILL: no cleanup at all)."""

from __future__ import annotations

import os
import signal
from typing import Any

from pytorch_lightning import Callback


class KillAtStep(Callback):
    """SIGKILL this process after optimizer step `step` (mid-epoch), or at the start of epoch
    `epoch` (just after the previous epoch's validation and checkpoints). With SIGSTOP instead,
    the process hangs without closing its sockets, as a frozen node does."""

    def __init__(
        self, step: int | None = None, epoch: int | None = None, signum: int = signal.SIGKILL
    ) -> None:
        self.step = step
        self.epoch = epoch
        self.signum = signum

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if self.step is not None and trainer.global_step >= self.step:
            os.kill(os.getpid(), self.signum)

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        if self.epoch is not None and trainer.current_epoch >= self.epoch:
            os.kill(os.getpid(), self.signum)


class NanAtStep(Callback):
    """Make the training loss NaN from optimizer step `step` on, for `count` batches."""

    def __init__(self, step: int, count: int = 1) -> None:
        self.step = step
        self.count = count

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.step <= trainer.global_step < self.step + self.count and not hasattr(
            pl_module, "_nan_patched"
        ):
            original = pl_module.nll
            pl_module._nan_patched = True

            def nll(*a: Any, **k: Any) -> Any:
                pl_module.nll = original
                del pl_module._nan_patched
                return original(*a, **k) * float("nan")

            pl_module.nll = nll


def main() -> None:
    """`python tests/helpers/crash.py OVERRIDES...`: train.py, plus the callback named in
    DIALOGLAB_TEST_CRASH ("kill_step=30", "kill_epoch=1", "stop_step=10" or "nan_step=5"), which stays out of the
    run's config (so the config, and its resume key, are those of a plain train.py run)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from dialoglab.experiment import train as train_module

    kind, _, value = os.environ["DIALOGLAB_TEST_CRASH"].partition("=")
    extra = {
        "kill_step": lambda: KillAtStep(step=int(value)),
        "kill_epoch": lambda: KillAtStep(epoch=int(value)),
        "nan_step": lambda: NanAtStep(step=int(value)),
        "stop_step": lambda: KillAtStep(step=int(value), signum=signal.SIGSTOP),
    }[kind]
    original = train_module.instantiate_callbacks
    train_module.instantiate_callbacks = lambda cfg: [*original(cfg), extra()]
    train_module.main()


if __name__ == "__main__":
    main()
