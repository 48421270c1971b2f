"""`hydra/sweeper=dialoglab_optuna`: Optuna sweeps on Hydra's public Sweeper plugin API.

Hydra only instantiates sweepers defined under the `hydra_plugins` package, so this thin plugin
lives here: its config schema, the samplers (`hydra/sweeper/sampler=tpe|random|grid|cmaes|
nsgaii|qmc`) and a class that hands the work to `dialoglab.experiment.sweeper` (imported when a
sweep starts, not when Hydra scans its plugins). No `from __future__ import annotations` here:
Hydra's scanner executes this module before registering it in sys.modules, where string
annotations break dataclasses, and OmegaConf needs `Optional` rather than `X | None`.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf needs these)

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class DialoglabOptunaSweeperConf:
    _target_: str = (
        "hydra_plugins.dialoglab_optuna_sweeper.dialoglab_optuna_sweeper.DialoglabOptunaSweeper"
    )
    _recursive_: bool = False  # sampler and pruner reach the sweeper as configs
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])  # noqa: UP006
    sampler: Any = None  # an Optuna sampler config (_target_ + arguments)
    # median | hyperband | none (null), or any Optuna pruner config with _target_
    pruner: Any = "none"
    direction: Any = "minimize"  # or maximize, or a list of them (multi-objective)
    study_name: Optional[str] = None  # noqa: UP045
    # an Optuna storage URL; null: sqlite:///<sweep dir>/optuna.sqlite
    storage: Optional[str] = None  # noqa: UP045
    n_trials: int = 20  # finished trials the study should have (interrupted ones not counted)
    n_jobs: int = 1  # trials asked and launched together (see hydra/launcher=local, slurm)
    max_failure_rate: float = 1.0  # stop when more than this fraction of a batch fails
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045 (key -> Hydra sweep override)


SAMPLERS = {
    "tpe": {
        "_target_": "optuna.samplers.TPESampler",
        "seed": None,
        "n_startup_trials": 10,
        "multivariate": False,
        "constant_liar": True,  # trials running in parallel are not sampled alike
    },
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None, "population_size": 50},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None, "qmc_type": "sobol"},
}

store = ConfigStore.instance()
store.store(
    group="hydra/sweeper",
    name="dialoglab_optuna",
    node=DialoglabOptunaSweeperConf,
    provider="dialoglab",
)
for _name, _node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="dialoglab")


class DialoglabOptunaSweeper(Sweeper):
    """Optuna sweeper: RDB storage, resume, failed and pruned trials (dialoglab.experiment.sweeper)."""

    def __init__(self, **kwargs: Any) -> None:
        from dialoglab.extras import exit_unless_installed

        exit_unless_installed("sweeps", "optuna", "sqlalchemy")  # one line, not a traceback
        from dialoglab.experiment.sweeper import OptunaSweep

        self.sweep_impl = OptunaSweep(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.sweep_impl.setup(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.launcher = self.sweep_impl.launcher

    def sweep(self, arguments: List[str]) -> None:  # noqa: UP006
        self.sweep_impl.sweep(arguments)
