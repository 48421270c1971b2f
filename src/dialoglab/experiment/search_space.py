"""Hydra sweep overrides as an Optuna search space, and an Optuna trial as a job's overrides.

The syntax is Hydra's override grammar, as `hydra.sweeper.params` and the command line use it:

    model.net.hidden_size: choice(128, 256, 512)     # categorical (also `128,256,512`)
    model.net.dropout: interval(0.0, 0.4)            # uniform float
    model.optimizer.lr: tag(log, interval(1e-4, 3e-3))   # log-uniform float
    model.net.encoder_n_layers: tag(int, interval(1, 4)) # integer, bounds included
    data.batch_size: range(16, 129, 16)              # integer steps, stop excluded (as in Hydra)

A plain `key=value` (command line or params) fixes that key for every trial and takes it out of
the search space; later overrides win over earlier ones (the command line over `params`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from dialoglab.errors import ConfigError


def distribution_of(override: Override) -> BaseDistribution:
    """The Optuna distribution a Hydra sweep override describes."""
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(
            list(override.sweep_iterator(transformer=Transformer.encode))
        )
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise ConfigError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step or 1))
        return FloatDistribution(values[0], values[-1], step=float(value.step or 1))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.input_line}: the Optuna sweeper cannot search this override")


@dataclass
class SearchSpace:
    """What Optuna samples (`distributions`, by parameter name) and what every job gets as is."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # parameter -> override key (+ prefix kept)
    fixed: dict[str, str] = field(default_factory=dict)  # parameter -> the override line

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
        """`hydra.sweeper.params` (key -> sweep) then the command line's task overrides."""
        lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
        space = cls()
        for override in OverridesParser.create().parse_overrides(lines):
            name = override.key_or_group
            space.distributions.pop(name, None)
            space.fixed.pop(name, None)
            if override.is_sweep_override():
                space.distributions[name] = distribution_of(override)
                space.keys[name] = override.get_key_element()
            else:
                space.fixed[name] = str(override.input_line)
        return space

    def job_overrides(self, params: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
        """The overrides of the job that runs a trial with these sampled `params`."""
        sampled = [f"{self.keys[k]}={Transformer.str(v)}" for k, v in params.items()]
        return [*self.fixed.values(), *sampled, *extra]

    def grid(self) -> dict[str, list[Any]]:
        """The search space as GridSampler's lists of values (choices and ranges only)."""
        grid: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[name] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[name] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise ConfigError(
                    f"hydra.sweeper.params.{name}: the grid sampler needs choice(...) or "
                    "range(...), not an interval"
                )
        return grid
