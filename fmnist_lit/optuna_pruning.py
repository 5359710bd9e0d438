"""Per-epoch pruning of Optuna trials (`callbacks.optuna_pruning`, switched on by hparams_search=optuna).

After each validation epoch the callback reports the monitored metric (`val/acc`) to the job's trial, the step being
the number of epochs done, and stops the job with `optuna.TrialPruned` when the pruner says so; the sweeper
(fmnist_lit/optuna_sweeper.py) then tells Optuna PRUNED and the leaderboard lists the job as pruned.

Optuna 2.10's own `optuna.integration.PyTorchLightningPruningCallback` derives from `pytorch_lightning.Callback`,
which the `lightning` package's Trainer does not accept as a callback, and it takes its trial when it is built,
which a config cannot give: this one finds its trial when fitting starts. The sweeper names every job by its trial's
number and keeps the study on disk, so a job loads the study and takes the trial of its own number; that works under
the basic and the joblib launchers alike.
"""

from __future__ import annotations

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException

SWEEPER = "ResumableOptunaSweeper"


def current_trial(pruner: optuna.pruners.BasePruner) -> optuna.trial.Trial | None:
    """The running trial of this job, judged by `pruner`; None outside a search by fmnist_lit's Optuna sweeper
    (a single run, another sweeper, a DDP job's own child process)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not str(hc.sweeper.get("_target_", "")).endswith(SWEEPER):
        return None
    study = optuna.load_study(study_name=hc.sweeper.study_name, storage=hc.sweeper.storage, pruner=pruner)
    # job number = trial number (the sweeper launches them so)
    trial = study.trials[hc.job.num]
    if trial.state != optuna.trial.TrialState.RUNNING:
        raise RuntimeError(
            f"trial {trial.number} of study {study.study_name} is {trial.state.name}, not RUNNING"
        )
    return optuna.trial.Trial(study, trial._trial_id)


class OptunaPruning(L.Callback):
    """Report `monitor` per epoch to the job's Optuna trial; raise optuna.TrialPruned when `pruner` prunes it
    (null: report only, never prune). Does nothing outside an Optuna search."""

    def __init__(self, pruner: optuna.pruners.BasePruner | None = None, monitor: str = "val/acc") -> None:
        self.pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
        self.monitor = monitor
        self.trial: optuna.trial.Trial | None = None
        # epochs already reported: a second validation in one epoch (val_check_interval < 1) is not reported
        self.reported: set[int] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trial = current_trial(self.pruner)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.trial is None or trainer.sanity_checking or epoch in self.reported:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise MisconfigurationException(
                f"callbacks.optuna_pruning.monitor={self.monitor} is not logged; logged: "
                f"{', '.join(sorted(trainer.callback_metrics))}"
            )
        self.trial.report(float(value), step=epoch)
        self.reported.add(epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"stopped after epoch {epoch} by {type(self.pruner).__name__} ({self.monitor}={float(value):.4f})"
            )
