"""SLURM preemption and time limits: on the job's warning signal, checkpoint and requeue.

`hydra/launcher=slurm` asks SLURM for SIGUSR2 some time before the job's end (`#SBATCH
--signal=USR2@<signal_delay_s>`). The signal reaches each task at any point of a step, possibly
while another rank waits in a collective, so the handler only takes note; at the end of the next
batch all ranks agree (one all-reduce) and together save `checkpoints/last.ckpt`; rank 0 then
runs `scontrol requeue` and every rank waits for SLURM to end the job. The requeued job starts
in the same run directory, sees that it was restarted (SLURM_RESTART_COUNT), and resumes from
that checkpoint as `resume=auto` does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning import Callback

from dialoglab.errors import TrainingError

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR2  # what submitit's sbatch scripts ask SLURM to send
WAIT_FOR_KILL_S = 600.0  # after `scontrol requeue`, SLURM ends the job within its kill wait


def slurm_job_id() -> str:
    """The id `scontrol requeue` takes: '<array job>_<index>' for an array element."""
    array_job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{index}" if array_job and index else os.environ["SLURM_JOB_ID"]


class RequeueOnSignal(Callback):
    """Checkpoint into `checkpoint_dir`/last.ckpt and requeue on REQUEUE_SIGNAL (SLURM only)."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signalled = False
        self._previous: Any = None
        self.active = SLURMEnvironment.detect()

    def _note(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.active:
            self._previous = signal.signal(REQUEUE_SIGNAL, self._note)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.active and self._previous is not None:
            signal.signal(REQUEUE_SIGNAL, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if not self.active:
            return
        if not trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            return
        path = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(path)  # every rank, together
        log.warning("SLURM signal: saved %s at step %d", path, trainer.global_step)
        if trainer.is_global_zero:
            job = slurm_job_id()
            if subprocess.call(["scontrol", "requeue", job]) != 0:
                raise TrainingError(
                    f"SLURM signal: saved {path}, but `scontrol requeue {job}` failed; submit "
                    "the job again with resume=auto to continue from that checkpoint"
                )
            log.warning("requeued SLURM job %s; waiting for SLURM to end this one", job)
        time.sleep(WAIT_FOR_KILL_S)
        raise TrainingError(f"SLURM did not end the job after its requeue; resume from {path}")


def was_requeued() -> bool:
    """This SLURM job was requeued (preempted or signalled) and is running again."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False
