"""Load Hugging Face models and tokenizers from a local directory or a hub name, failing fast offline.

`from_pretrained("gpt2")` without network retries for half a minute or more before it gives up.
`load_pretrained` checks once (about 2 s at most) whether the hub answers; when it does not, it
switches the process to offline mode (`HF_HUB_OFFLINE=1`), loads from the local cache only, and
when the files are not cached says how to supply a local directory instead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from dialoglab.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "on", "yes", "true"}


def is_offline() -> bool:
    """True when the user or an earlier check put the process in Hugging Face offline mode."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


def go_offline() -> None:
    """Offline for the rest of the process: the env switch and the constant read at import time."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (DNS included)."""
    url = urlparse(hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def is_local_path(name_or_path: str) -> bool:
    """A name that can only be a directory: absolute, ~, ./ or ../, or an existing path."""
    if name_or_path.startswith(("/", "~", "./", "../", ".\\", "..\\")):
        return True
    return Path(name_or_path).exists()


def offline_hint(name: str, key: str) -> str:
    return (
        f"{key}={name!r} is a Hugging Face hub name, the hub is not reachable (offline) and the "
        "files are not in the local Hugging Face cache. On a machine with network, save them to "
        'a directory, e.g. `python -c "from transformers import AutoTokenizer, GPT2LMHeadModel; '
        f"GPT2LMHeadModel.from_pretrained('{name}').save_pretrained('DIR'); "
        f"AutoTokenizer.from_pretrained('{name}').save_pretrained('DIR')\"` "
        f"(or `hf download {name} --local-dir DIR`), copy DIR here and set {key}=/path/to/DIR"
    )


def load_pretrained(
    loader: Callable[..., T], name_or_path: str, key: str = "model.pretrained"
) -> T:
    """`loader(name_or_path, **kw)` (a `from_pretrained`) from a local directory or the hub.

    Errors are `ConfigError`s naming `key`; offline, a hub name fails within a few seconds.
    """
    name = str(name_or_path)
    kwargs: dict[str, Any] = {}
    if is_local_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"{key}={name}: no such directory; it must hold a Hugging Face model saved with "
                "save_pretrained (config.json, model.safetensors, tokenizer files)"
            )
        name = str(path)
    else:
        if not is_offline() and not hub_reachable():
            log.warning(
                "Hugging Face hub %s unreachable: HF_HUB_OFFLINE=1 from now on", hub_endpoint()
            )
            go_offline()
        if is_offline():
            kwargs["local_files_only"] = True
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as err:
        if kwargs.get("local_files_only"):
            raise ConfigError(offline_hint(name, key)) from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={name!r}: could not load it ({first})") from err
