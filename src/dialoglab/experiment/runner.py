"""What every entry point shares: where configs live, user errors without tracebacks, run reports."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from dialoglab.errors import DialoglabError

log = logging.getLogger(__name__)

# conf/ sits at the repository root; DIALOGLAB_CONFIG_DIR points elsewhere (e.g. a user's copy).
CONFIG_DIR = Path(
    os.environ.get("DIALOGLAB_CONFIG_DIR", Path(__file__).resolve().parents[3] / "conf")
)

console = Console(stderr=False)

# Lightning's own use of a deprecated torch API; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run a task; a user error (bad data, config or checkpoint) prints one clear line, no traceback.

    In a multirun the error is re-raised so the sweeper records the job as failed.
    """
    try:
        return task(cfg)
    except DialoglabError as err:
        log.error("%s", err)
        if is_multirun():
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


def report_run(
    task: str,
    output_dir: Path,
    metrics: dict[str, float],
    checkpoint: str = "",
    samples: Sequence[tuple[str, str]] = (),
) -> None:
    """Tell the user where the run went, what it measured, and what the model says."""
    table = Table(title=f"{task}: metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        if name.startswith(("val/", "test/")):
            table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)
    if samples:
        replies = Table(title="sample replies", show_header=True)
        replies.add_column("you")
        replies.add_column("bot")
        for prompt, reply in samples:
            replies.add_row(prompt, reply or "(empty)")
        console.print(replies)
    console.print(f"run directory: [bold]{output_dir}[/]")
    if checkpoint:
        console.print(f"best checkpoint: [bold]{checkpoint}[/]")
        console.print(f"evaluate it with: python eval.py ckpt_path={checkpoint}")
