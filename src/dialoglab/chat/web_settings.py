"""The web chat's settings: Hydra overrides after `--`, composed with conf/chat.yaml.

    streamlit run app.py -- ckpt_path=best quantize=int8 decoding=beam paths.root_dir=/data/runs

The same keys as `python chat.py` (plus the `paths` group, whose `root_dir` is where the sidebar
lists checkpoints from, as train.py writes them); they only preselect what the sidebar shows.
A bad override raises a ConfigError naming it, for the page to show instead of a traceback.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dialoglab.errors import ConfigError
from dialoglab.experiment.runner import CONFIG_DIR
from dialoglab.models.quantize import QUANTIZE_CHOICES

CONFIG_NAME = "chat"
USAGE = "streamlit run app.py -- ckpt_path=PATH quantize=int8 decoding=beam paths.root_dir=DIR"
# chat.yaml has no `paths` group (chat.py writes nothing); the web app lists checkpoints under
# paths.root_dir/outputs, so it adds conf/paths/default.yaml.
WEB_DEFAULTS = ("+paths=default",)
_compose_lock = threading.Lock()  # Hydra's global state: one composition at a time


@dataclass(frozen=True)
class WebSettings:
    """What the overrides preselect: checkpoint (None: the newest listed), weights, decoding
    preset and its fields, device, speed paths, and the root whose outputs/ holds the runs."""

    root_dir: Path
    ckpt_path: str | None = None
    quantize: str = "auto"
    device: str = "cpu"
    decoding_preset: str = "default"
    decoding: dict[str, Any] = field(default_factory=dict)
    accel: dict[str, Any] = field(default_factory=dict)


def compose_chat(overrides: Sequence[str]) -> DictConfig:
    """conf/chat.yaml with the web defaults and `overrides`, as `python chat.py` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with _compose_lock:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                return compose(
                    CONFIG_NAME, overrides=[*WEB_DEFAULTS, *overrides], return_hydra_config=True
                )
        finally:
            GlobalHydra.instance().clear()


def describe_override_error(err: Exception) -> str:
    """Hydra's message (without its search-path listing) and its cause's first line."""
    text = str(err).split("Config search path:")[0].strip()
    cause = str(err.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in text:
        text = f"{text}\n{cause[0]}"
    return text


def _plain(node: DictConfig) -> dict[str, Any]:
    """A config node as a plain dict (hashable by Streamlit's cache, readable by DecodingConfig)."""
    container = OmegaConf.to_container(node, resolve=True)
    return {str(k): v for k, v in container.items()} if isinstance(container, dict) else {}


def web_settings(argv: Sequence[str] | None = None) -> WebSettings:
    """The settings the script's arguments (default: `sys.argv[1:]`, what Streamlit passes after
    `--`) give; a ConfigError naming the bad override or value otherwise."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose_chat(overrides)
        root_dir = Path(str(cfg.paths.root_dir))
    except Exception as err:  # Hydra's parse, composition and interpolation errors
        raise ConfigError(
            f"bad setting after `--`: {describe_override_error(err)}\n"
            f"The settings are the keys of conf/chat.yaml and conf/paths/, e.g. {USAGE}"
        ) from err
    quantize = str(cfg.quantize).strip().lower()
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize={cfg.quantize}: must be one of {', '.join(QUANTIZE_CHOICES)}")
    ckpt = "" if OmegaConf.is_missing(cfg, "ckpt_path") else str(cfg.ckpt_path or "").strip()
    return WebSettings(
        root_dir=root_dir,
        ckpt_path=ckpt or None,
        quantize=quantize,
        device=str(cfg.device),
        decoding_preset=str(cfg.hydra.runtime.choices.get("decoding", "default")),
        decoding=_plain(cfg.decoding),
        accel=_plain(cfg.accel),
    )
