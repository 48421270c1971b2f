"""`DecodingConfig`: how replies are decoded, the same fields for every model family and front end.

Presets are YAML files (`conf/decoding/<name>.yaml` in this repository). The folder they are read
from is the caller's to give (`presets_dir`): entry points pass the folder of the Hydra configs
they run with; without one, the presets shipped beside the package are read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialoglab.errors import ConfigError

STRATEGIES = ("greedy", "beam", "sample")
# The presets of the package's conf/ (the repository's conf/, linked as src/dialoglab/conf).
DEFAULT_PRESETS_DIR = Path(__file__).resolve().parents[1] / "conf" / "decoding"


@dataclass
class DecodingConfig:
    """How replies are decoded; the same fields for every model family and front end.

    `max_length=None` means the model's own default (`model.max_reply_length` for seq2seq).
    """

    strategy: str = "greedy"  # greedy | beam | sample
    max_length: int | None = None  # generated tokens incl. <eos>; None: the model's default
    min_length: int = 0  # tokens before <eos> is allowed
    num_beams: int = 5  # beam only; 1 is greedy
    length_penalty: float = 1.0  # beam only: score / length ** length_penalty
    early_stopping: bool = False  # beam only: stop at num_beams finished (else: when none can win)
    temperature: float = 1.0  # sample only
    top_k: int = 0  # sample only; 0 = off
    top_p: float = 1.0  # sample only; 1.0 = off
    no_repeat_ngram_size: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    block_context_ngram_size: int = 0  # 0 = off: n-grams of the context may be repeated
    seed: int | None = None  # sample only: the same seed and input give the same reply
    check_every: int = 8  # steps between checks that every sequence has finished (host syncs)
    allow_unk: bool = False  # false: no reply holds `<unk>` (the unknown-word token)
    # beam only, > 0: rerank the finished beams by MMI-antiLM (Li et al., 2016),
    # [log p(T|S) - mmi_lambda * log p(T)] / length ** length_penalty, p(T) the reply's
    # likelihood after an empty source: generic replies ("i don't know.") lose. 0 = plain beam.
    mmi_lambda: float = 0.0

    def __post_init__(self) -> None:
        def fail(key: str, rule: str) -> None:
            raise ConfigError(f"decoding.{key} must be {rule}, got {getattr(self, key)!r}")

        if self.strategy not in STRATEGIES:
            fail("strategy", f"one of {', '.join(STRATEGIES)}")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 1):
            fail("max_length", "an integer >= 1 or null")
        for key, low in (
            ("min_length", 0),
            ("num_beams", 1),
            ("top_k", 0),
            ("no_repeat_ngram_size", 0),
            ("block_context_ngram_size", 0),
            ("check_every", 1),
        ):
            if not _is_int(getattr(self, key)) or getattr(self, key) < low:
                fail(key, f"an integer >= {low}")
        for key in ("length_penalty", "temperature", "top_p", "repetition_penalty", "mmi_lambda"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                fail(key, "a number")
            setattr(self, key, float(value))
        if self.temperature <= 0:
            fail("temperature", "> 0 (use strategy=greedy for argmax decoding)")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "in (0, 1]")
        if self.repetition_penalty <= 0:
            fail("repetition_penalty", "> 0 (1.0 is off)")
        if self.mmi_lambda < 0:
            fail("mmi_lambda", ">= 0 (0 is off)")
        for key in ("early_stopping", "allow_unk"):
            if not isinstance(getattr(self, key), bool):
                fail(key, "true or false")
        if self.seed is not None and not _is_int(self.seed):
            fail("seed", "an integer or null")
        if self.max_length is not None and self.min_length >= self.max_length:
            fail("min_length", f"< max_length={self.max_length}")

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_any(
        cls, value: Any = None, *, presets_dir: str | Path | None = None, **overrides: Any
    ) -> DecodingConfig:
        """A config from None (greedy), a preset name ("beam"), a dict/DictConfig, or a config.

        A preset name reads `<presets_dir>/<name>.yaml` (see `load_preset`); `overrides` replace
        fields after that.
        """
        if value is None:
            config = cls()
        elif isinstance(value, DecodingConfig):
            config = dataclasses.replace(value)
        elif isinstance(value, str):
            config = cls.from_any(load_preset(value, presets_dir))
        else:
            values = _to_plain_dict(value)
            values.pop("_target_", None)
            _check_keys(values)
            config = cls(**values)
        return config.replace(**overrides) if overrides else config

    def replace(self, **changes: Any) -> DecodingConfig:
        """A copy with some fields changed (validated again)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_max_length(self, default: int) -> int:
        return self.max_length if self.max_length is not None else default

    @property
    def effective_strategy(self) -> str:
        """`beam` with one beam is greedy (as in Hugging Face)."""
        if self.strategy == "beam" and self.num_beams == 1:
            return "greedy"
        return self.strategy


def _check_keys(values: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(DecodingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown decoding setting(s) {', '.join('decoding.' + k for k in unknown)}; "
            f"accepted: {', '.join(sorted(known))}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _to_plain_dict(value: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return dict(OmegaConf.to_container(value, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(
        f"decoding must be a preset name, a mapping or a DecodingConfig, got {type(value).__name__}"
    )


# -----------------------------------------------------------------------------
# Presets


def preset_names(presets_dir: str | Path | None = None) -> list[str]:
    """The presets in `presets_dir` (greedy, beam, sample, nucleus, ...)."""
    folder = Path(presets_dir) if presets_dir is not None else DEFAULT_PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_preset(name: str, presets_dir: str | Path | None = None) -> dict[str, Any]:
    """The fields of `<presets_dir>/<name>.yaml` as a plain dict, its `defaults` merged first.

    `presets_dir` is the caller's `conf/decoding/` (None: the one shipped with this package).
    Only names listed by `preset_names` are read, so a name cannot reach another folder.
    """
    import yaml

    folder = Path(presets_dir) if presets_dir is not None else DEFAULT_PRESETS_DIR
    names = preset_names(folder)
    if name not in names:
        raise ConfigError(
            f"decoding={name}: no such preset in {folder}; choose one of {', '.join(names)}"
        )
    values = yaml.safe_load((folder / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    merged: dict[str, Any] = {}
    for parent in values.pop("defaults", None) or []:  # e.g. nucleus.yaml: defaults: [sample]
        if parent != "_self_":
            merged.update(load_preset(str(parent), folder))
    merged.update(values)
    return merged
