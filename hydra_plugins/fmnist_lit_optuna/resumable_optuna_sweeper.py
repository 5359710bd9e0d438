"""The Hydra face of fmnist_lit/optuna_sweeper.py (config: conf/hydra/sweeper/optuna_resumable.yaml).

Hydra imports every module under `hydra_plugins` at each start, sweep or not: this one imports no Optuna, and
needs no sweep extra, until the sweeper is built."""

from __future__ import annotations

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Optuna imports alembic (for its SQLite storage), which logs each of its own plugins at INFO level on import:
# quiet before any Optuna import, since Hydra scans this module first
logging.getLogger("alembic").setLevel(logging.WARNING)


class ResumableOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from fmnist_lit.optuna_sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
