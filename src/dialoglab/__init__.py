"""dialoglab: train, compare and chat with conversational models.

    from dialoglab import Chatbot, compose, evaluate, train

The names come from `dialoglab.api` and are imported on first use (PEP 562), so that
`import dialoglab` stays cheap: torch, Lightning and Hydra load only when one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Chatbot", "__version__", "compose", "evaluate", "train"]

_LAZY = {
    "Chatbot": "dialoglab.api",
    "compose": "dialoglab.api",
    "evaluate": "dialoglab.api",
    "train": "dialoglab.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dialoglab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
