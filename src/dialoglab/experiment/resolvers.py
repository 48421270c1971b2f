"""OmegaConf resolvers our configs use; registered on import (entry points import this first)."""

from __future__ import annotations

import uuid

from omegaconf import OmegaConf


def _run_id() -> str:
    """Short random id so two runs started in the same second get different directories."""
    return uuid.uuid4().hex[:6]


if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)
