"""Errors a user can act on: each message names the file, line or key and says what to do."""

from __future__ import annotations


class DialoglabError(Exception):
    """Base class of every error dialoglab raises for bad input or configuration."""


class DataError(DialoglabError):
    """A corpus file is missing, unreadable or not in the expected format."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class CheckpointError(DialoglabError):
    """A checkpoint is missing, corrupt, or does not match what it is used with."""


class ConfigError(DialoglabError):
    """A configuration value is invalid (names the key and the accepted values)."""


class TrainingError(DialoglabError):
    """Training cannot go on (e.g. the loss became NaN or infinite); names the step."""
