"""What every corpus reader provides, and the shared skip-or-raise bookkeeping."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dialoglab.data.dialogue import Dialogue, ReadStats
from dialoglab.errors import DataError

log = logging.getLogger(__name__)

STRICT_HINT = "fix or delete this row, or set data.strict=false to skip such rows"


@runtime_checkable
class CorpusReader(Protocol):
    """Reads one corpus into dialogues; `fingerprint()` changes whenever the result could."""

    def read(self) -> tuple[list[Dialogue], ReadStats]: ...

    def fingerprint(self) -> dict[str, Any]: ...


def problem(
    stats: ReadStats,
    strict: bool,
    reason: str,
    path: str | Path,
    line: int | None = None,
    item: str | None = None,
) -> None:
    """Record a skipped row, or raise DataError naming file and line when `strict`.

    `item` locates the problem where there is no line number (e.g. "conversation 3").
    """
    if strict:
        detail = f"{item}: {reason}" if item else reason
        raise DataError(f"{detail}; {STRICT_HINT}", str(path), line)
    where = f"{Path(path).name}:{line}" if line is not None else Path(path).name
    stats.skip(reason, f"{where} {item}" if item else where)


MOSTLY_SKIPPED_HINT = (
    "this usually means a truncated file, or files that do not belong together (another "
    "export or version); check the files, or set data.strict=true to stop at the first problem"
)


def finish(
    stats: ReadStats,
    strict: bool,
    logger: logging.Logger | None = None,
    source: str = "",
    kept: int | None = None,
    attempted: int | None = None,
    hint: str = MOSTLY_SKIPPED_HINT,
) -> None:
    """Log one warning summarising what was skipped, by kind (strict readers raised already).

    With `kept` (dialogues read) it also says plainly when most of the corpus was skipped:
    fewer than half of the `attempted` dialogues (default: kept + skipped rows) were usable.
    """
    if stats.total_skipped == 0:
        return
    assert not strict, "a strict reader must raise at its first problem"
    prefix = f"{source}: " if source else ""
    message = prefix + stats.summary()
    if kept is not None:
        attempted = attempted if attempted is not None else kept + stats.total_skipped
        if attempted and kept < attempted / 2:
            message += (
                f"\nmost of the corpus was skipped: only {kept} of {attempted} dialogues are "
                f"usable; {hint}"
            )
    (logger or log).warning("%s", message)


def file_info(paths: Iterable[Path]) -> list[list[Any]]:
    """[name, size, mtime_ns] of each existing file, for cache fingerprints."""
    info = []
    for path in paths:
        if path.is_file():
            st = path.stat()
            info.append([path.name, st.st_size, st.st_mtime_ns])
    return info
