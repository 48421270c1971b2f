"""What a run prints: one line per event, user text printed as text.

Lightning announces a few things that are noise in a dialoglab run: tips to install its cloud
logger and model registry; that the model summary callback we configured is the one in use;
"restoring states" before the line saying which weights were loaded. They are dropped by
message, by a logging filter on Lightning's `rank_zero` loggers, so anything else it says shows.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from rich.console import Console
from rich.text import Text

# Lightning logs through these two names (lightning_fabric sets one, pytorch_lightning the other).
RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)

NOISE = (
    "💡 Tip: ",  # advertises litlogger / litmodels on every Trainer
    "Trainer already configured with model summary callbacks",  # ours is configured on purpose
    "Restoring states from the checkpoint path at",  # the next line names the checkpoint again
)


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_third_party() -> None:
    """Install the NOISE filter on Lightning's loggers (once; calling again changes nothing)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(NOISE))


def print_error(message: object, stream: TextIO | None = None) -> None:
    """`error: <message>` on stderr, the message as plain text: brackets in it (a JSON shape,
    a list of keys) are printed, not read as rich markup."""
    console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
    console.print(Text.assemble(("error:", "bold red"), " ", str(message)))


def log_to_files(logger: logging.Logger, level: int, message: str) -> None:
    """Record `message` in the run's log files only (Hydra's `<task>.log`): the console shows it
    once, through `print_error`."""
    record = logger.makeRecord(logger.name, level, "(dialoglab)", 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)
