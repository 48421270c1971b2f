"""dialoglab's C++ extension (`csrc/`): built once by `make install`, loaded by the speed paths.

`python -m dialoglab.accel.extension` builds it (what `make install` runs) into
`~/.cache/dialoglab/accel/<key>/`, where the key hashes the sources, the flags and the torch
and Python versions, so a changed source or a new torch builds a fresh copy. A run loads a
built copy without compiling anything; where none is built yet it builds one and says so
("building ..."), and where that is impossible (no compiler) it says once that the pure
PyTorch loops serve instead. `accel=none` never gets here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "dialoglab_accel"
CSRC = Path(__file__).parent / "csrc"
SOURCES = [CSRC / "fused_gru_loops.cpp"]
HEADERS = [CSRC / "gru_gates.h"]
# OpenMP where torch itself uses GNU OpenMP (Linux): at::parallel_for then runs on torch's pool.
_OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", *_OPENMP]
_state: dict[str, Any] = {}


def build_directory() -> Path:
    """Where this machine's build of the current sources lives."""
    digest = hashlib.sha256()
    for path in [*SOURCES, *HEADERS]:
        digest.update(path.read_bytes())
    digest.update(" ".join([*CFLAGS, torch.__version__, platform.python_version()]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dialoglab" / "accel" / digest.hexdigest()[:16]


def _library(directory: Path) -> Path:
    return directory / f"{NAME}.so"


def build(verbose: bool = False) -> Path:
    """Compile the extension into `build_directory()` (a no-op when it is there) and load it."""
    from torch.utils.cpp_extension import load

    directory = build_directory()
    if not _library(directory).is_file():
        log.warning("building dialoglab's C++ extension (once per source and torch version)")
        directory.mkdir(parents=True, exist_ok=True)
        load(
            NAME,
            sources=[str(path) for path in SOURCES],
            extra_cflags=CFLAGS,
            extra_ldflags=_OPENMP,
            build_directory=str(directory),
            is_python_module=False,
            verbose=verbose,
        )
    else:
        torch.ops.load_library(str(_library(directory)))
    return _library(directory)


def compiled_ops() -> Any | None:
    """`torch.ops.dialoglab_gru` when the extension is loaded (built first if needed), else None
    (no compiler here: said once, and the Python loops serve)."""
    if "ops" not in _state:
        _state["ops"] = None
        try:
            build()
            _state["ops"] = torch.ops.dialoglab_gru
        except Exception as error:  # no compiler, headers or ninja
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            log.warning("dialoglab's C++ extension is unavailable (%s): pure PyTorch runs", reason)
    return _state["ops"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(f"dialoglab C++ extension: {build()}")
    except Exception as error:  # make install goes on: the pure PyTorch paths serve
        print(f"dialoglab C++ extension not built ({error}); the pure PyTorch paths will serve")
