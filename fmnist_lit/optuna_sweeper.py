"""Optuna search whose study lives on disk: a killed search can be continued and a finished one extended.

hydra-optuna-sweeper's sweeper keeps the study where `storage` says, but on every call it runs `n_trials` new
trials, numbers the job folders from 0 again and tells Optuna FAIL for any job that raised. This subclass (found by
Hydra through hydra_plugins/fmnist_lit_optuna; config conf/hydra/sweeper/optuna_resumable.yaml):
- keeps the study in SQLite beside the job folders (`<sweep folder>/optuna.db`), with the task overrides it was
  started with;
- continues it on request only: `hydra.sweep.dir=<that folder> hydra.sweeper.resume=true` with the same overrides.
  Trials that were running when the search died are told FAIL and marked `interrupted`; they do not count. Trials
  are then run until `n_trials` have ended, so the same command finishes a killed search, and a larger `n_trials`
  extends a finished one. Without `resume` a folder that holds a sweep stays refused (`CheckBeforeResuming`);
- names each job folder by its trial's number: a continued study numbers on where it stopped (no folder is reused),
  and a job finds its own trial by its number (fmnist_lit/optuna_pruning.py);
- tells Optuna PRUNED for a job stopped by its pruner (optuna.TrialPruned), FAIL for any other error.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from fmnist_lit.cli import CheckBeforeWriting, fail

log = logging.getLogger(__name__)
# user attribute of a trial that was running when its search was killed
INTERRUPTED = "interrupted"
# study user attribute: the task overrides the search was started with (a continued search must repeat them)
OVERRIDES = "task_overrides"
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def sqlite_file(storage: Any) -> Path | None:
    """The database file of a `sqlite:///<path>` storage URL; None for any other storage."""
    prefix = "sqlite:///"
    return Path(storage[len(prefix) :]) if isinstance(storage, str) and storage.startswith(prefix) else None


def ended_trials(study: optuna.Study) -> int:
    """Trials that ran to an end: what `n_trials` counts (not those cut off by a killed search)."""
    return sum(
        t.state in ENDED and not t.user_attrs.get(INTERRUPTED) for t in study.get_trials(deepcopy=False)
    )


class CheckBeforeResuming(CheckBeforeWriting):
    """CheckBeforeWriting, except that a search with `hydra.sweeper.resume=true` goes into its existing sweep
    folder: the sweeper then checks that the folder holds the study, before it writes anything."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.hydra.sweeper.get("resume"):
            super().on_multirun_start(config, **kwargs)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, resume: bool = False, **settings: Any) -> None:
        super().__init__(**settings)
        self.resume = resume

    def sweep(self, arguments: list[str]) -> None:
        if len(self._get_directions()) != 1:
            fail("hydra.sweeper.direction: one direction (train.py returns one value, optimized_metric)")
        space, fixed = self._search_space(arguments)
        study = self._open_study(sorted(arguments))
        while (to_go := self.n_trials - ended_trials(study)) > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, to_go))]
            overrides = self._configure_trials(trials, space, fixed)
            # job folder = trial number; ask() numbers a batch's trials consecutively
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            failures = [e for t, r in zip(trials, returns) if (e := self._tell(study, t, r)) is not None]
            if len(failures) / len(returns) > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed (max_failure_rate=%s)",
                    len(failures),
                    len(returns),
                    self.max_failure_rate,
                )
                raise failures[0]
        self._save_results(study)

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
        """(distributions, fixed values) from `params` and the command line, as the plugin builds them."""
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        space = {**(self.search_space_distributions or {}), **space}
        for name in fixed:
            space.pop(name, None)
        # the grid sampler comes as a partial that needs the space (and caps n_trials at the grid's size)
        if isinstance(self.sampler, functools.partial):
            grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        return space, fixed

    def _open_study(self, overrides: list[str]) -> optuna.Study:
        """A new study, or with `resume` the existing one, its interrupted trials ended. Refusals come before
        anything is written: one `error:` line, exit status 2."""
        db = sqlite_file(self.storage)
        if not self.resume:
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            try:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage,
                    sampler=self.sampler,
                    directions=self._get_directions(),
                )
            except optuna.exceptions.DuplicatedStudyError:
                fail(
                    f"hydra.sweeper.study_name={self.study_name} already exists in {self.storage}: add "
                    "hydra.sweeper.resume=true to continue it, or choose another study_name"
                )
            study.set_user_attr(OVERRIDES, overrides)
            return study
        if db is not None and not db.is_file():
            fail(
                f"hydra.sweeper.resume=true: no study to continue in hydra.sweep.dir={self.sweep_dir} ({db})"
            )
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler)
        except KeyError:
            fail(f"hydra.sweeper.resume=true: no study named {self.study_name} in {self.storage}")
        started = study.user_attrs.get(OVERRIDES, overrides)
        if started != overrides:
            fail(
                f"hydra.sweeper.resume=true: the study was started with the overrides `{' '.join(started)}`; "
                "continue it with exactly these (hydra.* settings, such as hydra.sweeper.n_trials, may change)"
            )
        self._end_interrupted(study)
        # a fresh random stream: the seed's own would draw the first trials' parameters again
        self.sampler.reseed_rng()
        log.info(
            "continuing study %s: %d trials ended, %d wanted",
            self.study_name,
            ended_trials(study),
            self.n_trials,
        )
        return study

    @staticmethod
    def _end_interrupted(study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            optuna.trial.Trial(study, t._trial_id).set_user_attr(INTERRUPTED, True)
            study.tell(t.number, state=TrialState.FAIL)
            log.warning("trial %d was cut off when the search stopped: told FAIL, not counted", t.number)

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn) -> Exception | None:
        """Tell Optuna how the job ended; return its exception if it failed (a pruned job did not fail)."""
        # the job's exception as it was kept (`return_value` would print "Error executing job" and raise it)
        error = ret._return_value if ret.status == JobStatus.FAILED else None
        if isinstance(error, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, error)
            return None
        try:
            # raises the job's exception
            value = float(ret.return_value)
        except Exception as e:  # noqa: BLE001 (whatever the job raised is a failed trial)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Failed experiment: %s", e)
            return e
        study.tell(trial, value)
        return None

    def _save_results(self, study: optuna.Study) -> None:
        """optimization_results.yaml in the sweep folder, as the plugin writes it: the best trial so far."""
        if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            log.warning("no trial completed: no best parameters to write")
            return
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        log.info("best trial %d: value %s, parameters %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")
