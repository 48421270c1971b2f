"""What every entry point shares: where configs live, which checkpoint `ckpt_path` names, user
errors without tracebacks, run reports."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dialoglab.errors import CheckpointError, DialoglabError
from dialoglab.experiment import resolvers  # noqa: F401  (every entry point's configs use them)
from dialoglab.experiment.console import log_to_files, print_error, quiet_third_party

log = logging.getLogger(__name__)

# The package's conf/ (the repository's conf/, linked as src/dialoglab/conf and installed with
# the package). A copy of it is used with Hydra's own `--config-path DIR` (docs/architecture.md).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

console = Console(stderr=False)

# `ckpt_path=best|last`: that checkpoint of the newest run under outputs/.
CKPT_KEYWORDS = ("best", "last")

# Lightning's own use of a deprecated torch API; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def find_checkpoints(root: str | Path = ".") -> list[Path]:
    """Checkpoints under root/outputs/**/checkpoints/, newest first."""
    found = (Path(root) / "outputs").glob("**/checkpoints/*.ckpt")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resolve_ckpt_path(value: str | Path, root: str | Path = ".", key: str = "ckpt_path") -> str:
    """The checkpoint `value` names: `best` (the run's best `epoch_*.ckpt`) or `last`
    (`last.ckpt`) of the newest run under root/outputs/ that has one; any other value as given.

    A run is a `checkpoints/` folder; its age is that of its newest checkpoint. `key` names the
    setting in the error raised when no run has such a checkpoint.
    """
    text = str(value).strip()
    if text not in CKPT_KEYWORDS:
        return text
    runs: dict[Path, list[Path]] = {}  # newest run first, each run's checkpoints newest first
    for path in find_checkpoints(root):
        runs.setdefault(path.parent, []).append(path)
    for checkpoints in runs.values():
        if text == "last":
            last = [p for p in checkpoints if p.name == "last.ckpt"]
            if last:
                return str(last[0])
        else:
            epochs = [p for p in checkpoints if p.name.startswith("epoch_")]
            if epochs:
                return str(_best_of(epochs))
    wanted = "last.ckpt" if text == "last" else "epoch_*.ckpt (a best checkpoint)"
    raise CheckpointError(
        f"{key}={text}: no run under {Path(root).resolve() / 'outputs'} has a {wanted} in its "
        f"checkpoints/ folder; train one (make quickstart) or give the checkpoint's path"
    )


def _best_of(epochs: list[Path]) -> Path:
    """The best of a run's epoch checkpoints (newest first): the one its last.ckpt records as
    ModelCheckpoint's best, else the newest (with save_top_k=1 the run keeps only the best)."""
    last = epochs[0].parent / "last.ckpt"
    if len(epochs) == 1 or not last.is_file():
        return epochs[0]
    try:
        import torch

        states = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["callbacks"]
        named = {Path(str(s.get("best_model_path", ""))).name for s in states.values()}
    except Exception:  # an unreadable last.ckpt: fall back to the newest
        return epochs[0]
    return next((p for p in epochs if p.name in named), epochs[0])


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run a task; a user error (bad data, config or checkpoint) prints one clear line, no traceback.

    In a multirun any error is logged, written to `<run dir>/error.txt` and re-raised, so the
    sweeper records the job as failed (our Optuna sweeper then goes on with the next trial).
    """
    quiet_third_party()
    failed = True
    try:
        result = task(cfg)
        failed = False
        return result
    except Exception as err:
        user_err = user_error(err)
        if is_multirun():
            if user_err is not None:
                log.error("%s", user_err)
            else:
                log.exception("this run of the sweep failed")
            record_failure(err)
            raise
        if user_err is None:
            raise
        log_to_files(log, logging.ERROR, str(user_err))  # the console shows it once, below
        print_error(user_err)
        sys.exit(2)
    finally:
        finish_wandb_run(failed)


def finish_wandb_run(failed: bool) -> None:
    """Close this run's W&B run: the next job of a multirun (same process) must get its own
    instead of Lightning's WandbLogger reusing the open one."""
    wandb = sys.modules.get("wandb")  # never import wandb just for this
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def user_error(err: BaseException | None) -> DialoglabError | None:
    """The DialoglabError behind `err`, also when wrapped (`raise ... from`, e.g. by Hydra's
    instantiate around a constructor's ConfigError); None for anything else (a bug)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DialoglabError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def describe_error(err: BaseException) -> str:
    """One line for a failed run: the user error behind it, else the exception's first line."""
    user_err = user_error(err)
    if user_err is not None:
        return str(user_err)
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0]}" if first else type(err).__name__


FAILURE_FILE = "error.txt"


def record_failure(err: BaseException) -> None:
    """Write the error of a failed sweep job into its run directory (read by the sweep report)."""
    try:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        (output_dir / FAILURE_FILE).write_text(f"{describe_error(err)}\n\n{text}")
    except Exception:  # reporting must never hide the original error
        log.debug("could not record the failure", exc_info=True)


def report_run(
    task: str,
    output_dir: Path,
    metrics: dict[str, float],
    checkpoint: str = "",
    samples: Sequence[tuple[str, str]] = (),
    label: str = "",
) -> None:
    """Tell the user where the run went, what it measured (of which checkpoint: `label`; rows
    `last_epoch/...` are the last validation's), and what the model says. The W&B run
    is closed first, so that nothing it prints comes after this report's last lines (the run
    directory and the command that evaluates it). Paths and replies are printed as text."""
    finish_wandb_run(failed=False)
    title = f"{task}: metrics of the {label}" if label else f"{task}: metrics"
    table = Table(title=title, show_header=True, min_width=len(title) + 4)  # title on one line
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics, key=lambda n: (n.startswith("last_epoch/"), n)):
        if name.startswith(("val/", "test/", "last_epoch/val/")):
            table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)
    if samples:
        replies = Table(title="sample replies", show_header=True)
        replies.add_column("you")
        replies.add_column("bot")
        for prompt, reply in samples:
            replies.add_row(escape(prompt), escape(reply) or "(empty)")  # text, not markup
        console.print(replies)
    console.print(f"run directory: [bold]{escape(str(output_dir))}[/]", soft_wrap=True)
    if checkpoint:
        console.print(f"best checkpoint: [bold]{escape(checkpoint)}[/]", soft_wrap=True)
        console.print(
            f"evaluate it with: python eval.py ckpt_path={escape(checkpoint)}", soft_wrap=True
        )
