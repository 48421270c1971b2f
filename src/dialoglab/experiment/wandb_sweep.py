"""W&B sweeps: the command lines a `wandb agent` runs for a sweep YAML, checked without a server.

    python -m dialoglab.experiment.wandb_sweep conf/wandb_sweep/gru_attn.yaml [--n 3]

prints the commands the agent would run for a few parameter assignments (each parameter's
extremes and a middle value) and checks that each one composes with Hydra like `train.py` does.
The expansion of `${env}`, `${interpreter}`, `${program}` and `${args_no_hyphens}` uses wandb's
own helpers, so what is tested is what the agent does.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from dialoglab.errors import ConfigError


def load_sweep(path: str | Path) -> dict[str, Any]:
    sweep = yaml.safe_load(Path(path).read_text())
    if not isinstance(sweep, dict) or "parameters" not in sweep or "program" not in sweep:
        raise ConfigError(f"{path}: a W&B sweep config needs `program` and `parameters`")
    return sweep


def _candidates(spec: dict[str, Any]) -> list[Any]:
    """A few values the sweep can assign to one parameter: its extremes and a middle one."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        values = list(spec["values"])
        return [values[0], values[-1], values[len(values) // 2]]
    low, high = spec["min"], spec["max"]
    distribution = spec.get("distribution", "int_uniform" if isinstance(low, int) else "uniform")
    if distribution.startswith("int") or distribution.startswith("q_"):
        return [int(low), int(high), int((low + high) // 2)]
    if distribution in ("log_uniform_values", "inv_log_uniform_values"):
        return [float(low), float(high), math.sqrt(float(low) * float(high))]
    if distribution == "log_uniform":  # min/max are exponents of e
        return [math.exp(low), math.exp(high), math.exp((low + high) / 2)]
    return [float(low), float(high), (float(low) + float(high)) / 2]


def sample_assignments(sweep: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """n parameter assignments: all minima/first values, all maxima/last values, the middles."""
    candidates = {name: _candidates(spec) for name, spec in sweep["parameters"].items()}
    return [{name: c[i % len(c)] for name, c in candidates.items()} for i in range(n)]


def agent_command(sweep: dict[str, Any], assignment: dict[str, Any]) -> list[str]:
    """The argv `wandb agent` runs for one assignment (as wandb_agent.Agent._command_run does)."""
    from wandb.sdk.launch.sweeps import utils

    command = utils.create_sweep_command([str(c) for c in sweep.get("command") or []] or None)
    macros: dict[str, Any] = utils.create_sweep_command_args(
        {"args": {name: {"value": value} for name, value in assignment.items()}}
    )
    macros.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    argv: list[str] = []
    for chunk in command:
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += macros.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def hydra_overrides(argv: Sequence[str], program: str) -> list[str]:
    """The Hydra overrides of an agent command: everything after the program."""
    return list(argv[list(argv).index(program) + 1 :])


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """Compose conf/train.yaml with these overrides, as `python train.py OVERRIDES` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dialoglab.experiment import resolvers  # noqa: F401
    from dialoglab.experiment.runner import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="W&B sweep YAML, e.g. conf/wandb_sweep/gru_attn.yaml")
    parser.add_argument("--n", type=int, default=3, help="assignments to try")
    args = parser.parse_args(argv)
    sweep = load_sweep(args.sweep)
    for assignment in sample_assignments(sweep, args.n):
        command = agent_command(sweep, assignment)
        print(shlex.join(command))
        compose_train(hydra_overrides(command, sweep["program"]))
    print(f"ok: {args.n} command lines compose with conf/train.yaml")


if __name__ == "__main__":
    main()
