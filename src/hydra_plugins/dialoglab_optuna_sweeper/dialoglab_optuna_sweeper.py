"""`hydra/sweeper=dialoglab_optuna`: hydra-optuna-sweeper's options plus a trial journal.

Hydra only instantiates sweepers defined under the `hydra_plugins` package, so this thin plugin
lives here; the work is done by `dialoglab.experiment.sweeper` (imported when a sweep starts, not
when Hydra scans its plugins). No `from __future__ import annotations` here: Hydra's scanner
executes this module before registering it in sys.modules, where string annotations break
dataclasses, and OmegaConf needs `Optional` rather than `X | None`.
"""

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig


@dataclass
class DialoglabOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = (
        "hydra_plugins.dialoglab_optuna_sweeper.dialoglab_optuna_sweeper.DialoglabOptunaSweeper"
    )
    # SQLite file recording every trial; the sweep resumes from it (null: no resume)
    journal: Optional[str] = None  # noqa: UP045
    # a failed trial never stops the sweep unless this fraction of a batch fails
    max_failure_rate: float = 1.0
    n_jobs: int = 1


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="dialoglab_optuna",
    node=DialoglabOptunaSweeperConf,
    provider="dialoglab",
)


class DialoglabOptunaSweeper(Sweeper):
    """Optuna sweeper that records failed trials as failed and resumes from its journal."""

    def __init__(self, journal: Optional[str] = None, **kwargs: Any) -> None:  # noqa: UP045
        from dialoglab.experiment.sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(journal=journal, **kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
