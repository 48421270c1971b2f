"""`run_if(...)`: a declared skip marker for tests that need something this machine may lack.

    @run_if(compiled_extension=True)
    def test_kernel(): ...

    pytest.param("compiled", marks=run_if(compiled_extension=True))

Each condition is checked once, when the marker is built (at collection); the skip reason names
what is missing, so `pytest -ra` says why a test did not run.
"""

from __future__ import annotations

import functools

import pytest


@functools.cache
def compiled_extension_available() -> bool:
    """Whether dialoglab's C++ extension loads here (built on first use; no compiler: False)."""
    from dialoglab.accel.extension import compiled_ops

    return compiled_ops() is not None


@functools.cache
def int8_available() -> bool:
    """Whether dynamic int8 quantized kernels run on this machine."""
    from dialoglab.models.quantize import int8_available as available

    return available()


@functools.cache
def chromium_available() -> bool:
    """Whether a Chromium binary is on PATH (the real-browser test of the web chat)."""
    import shutil

    return any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))


def run_if(
    *,
    compiled_extension: bool = False,
    int8: bool = False,
    chromium: bool = False,
) -> pytest.MarkDecorator:
    """A `skipif` marker that skips unless every requirement set to True holds here."""
    missing = []
    if chromium and not chromium_available():
        missing.append("Chromium is not installed (Debian: apt-get install -y chromium)")
    if compiled_extension and not compiled_extension_available():
        missing.append("dialoglab's C++ extension cannot be built here (no compiler)")
    if int8 and not int8_available():
        missing.append("no quantized int8 kernels on this machine")
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "runs here")
