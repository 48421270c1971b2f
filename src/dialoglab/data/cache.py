"""Processed-data cache: keyed by a hash of everything that shaped it, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dialoglab.errors import DataError

CACHE_FORMAT = 1


def cache_key(parts: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able description (reader, tokenizer and example settings)."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cache(path: Path) -> dict[str, Any] | None:
    """The cached object, None when absent; a corrupt file is reported and ignored (rebuilt)."""
    if not path.exists():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: rebuild rather than crash
        raise DataError(
            f"the data cache is corrupt ({type(err).__name__}: {err}); delete it and rerun",
            str(path),
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
        return None
    return obj
