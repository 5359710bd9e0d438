"""Optuna search that survives: the study on disk in the sweep folder, continued after kill -9 or extended with
`hydra.sweeper.resume=true`, per-epoch pruning told to Optuna as PRUNED and listed as pruned on the leaderboard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from fmnist_lit.cli import CONF_DIR
from fmnist_lit.leaderboard import find_jobs, write_leaderboard
from fmnist_lit.sweep import SweepSummary
from tests.helpers import ROOT, TINY, fake_job

optuna = pytest.importorskip("optuna", reason="install the sweep extra: pip install -e '.[sweep]'")

from fmnist_lit.optuna_pruning import OptunaPruning, current_trial
from fmnist_lit.optuna_sweeper import (
    INTERRUPTED,
    CheckBeforeResuming,
    ResumableOptunaSweeperImpl,
    ended_trials,
    sqlite_file,
)

State = optuna.trial.TrialState


def search_config(sweep_dir: Path, *overrides: str):
    """conf/train.yaml with hparams_search=optuna, its hydra node included (as a multirun sees it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}", *overrides],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    return cfg


def sweeper(storage: str, resume: bool = False) -> ResumableOptunaSweeperImpl:
    s = ResumableOptunaSweeperImpl(
        resume=resume,
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
        storage=storage,
        study_name="fmnist",
        n_trials=2,
        n_jobs=1,
        max_failure_rate=1.0,
        search_space=None,
        custom_search_space=None,
        params=None,
    )
    s.sweep_dir = str(Path(storage.removeprefix("sqlite:///")).parent)
    return s


def test_the_study_is_kept_in_sqlite_inside_the_sweep_folder(tmp_path):
    cfg = search_config(tmp_path / "sweep")
    assert cfg.hydra.sweeper.storage == f"sqlite:///{tmp_path}/sweep/optuna.db"
    assert sqlite_file(cfg.hydra.sweeper.storage) == tmp_path / "sweep" / "optuna.db"
    assert sqlite_file("sqlite:///outputs/multirun/x/optuna.db") == Path("outputs/multirun/x/optuna.db")
    assert sqlite_file("postgresql://host/db") is None and sqlite_file(None) is None
    # pruning is on by default: a median pruner, reporting val/acc
    cb = cfg.callbacks.optuna_pruning
    assert cb.monitor == "val/acc" and cb.pruner._target_ == "optuna.pruners.MedianPruner"
    assert cfg.hydra.sweeper.resume is False


def test_a_new_study_records_its_overrides_and_refuses_to_reuse_a_name(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/new/optuna.db"
    study = sweeper(storage)._open_study(["a=1", "b=2"])
    assert (tmp_path / "new" / "optuna.db").is_file() and study.user_attrs["task_overrides"] == ["a=1", "b=2"]
    with pytest.raises(SystemExit) as e:
        sweeper(storage)._open_study(["a=1", "b=2"])
    assert e.value.code == 2 and "hydra.sweeper.resume=true" in capsys.readouterr().err


def test_resume_refuses_a_folder_without_a_study_and_other_overrides(tmp_path, capsys):
    missing = tmp_path / "none"
    with pytest.raises(SystemExit) as e:
        sweeper(f"sqlite:///{missing}/optuna.db", resume=True)._open_study(["a=1"])
    assert e.value.code == 2 and "no study to continue" in capsys.readouterr().err
    # nothing written
    assert not missing.exists()

    storage = f"sqlite:///{tmp_path}/s/optuna.db"
    sweeper(storage)._open_study(["a=1"])
    with pytest.raises(SystemExit) as e:
        sweeper(storage, resume=True)._open_study(["a=2"])
    assert e.value.code == 2 and "started with the overrides `a=1`" in capsys.readouterr().err


def test_resume_ends_the_trial_a_kill_cut_off_and_does_not_count_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = sweeper(storage)._open_study([])
    study.tell(study.ask(), 0.5)
    # running when the search was killed
    study.ask()
    assert ended_trials(study) == 1
    study = sweeper(storage, resume=True)._open_study([])
    cut = study.trials[1]
    assert cut.state == State.FAIL and cut.user_attrs[INTERRUPTED] is True
    assert ended_trials(study) == 1 and study.trials[0].value == 0.5


def test_a_pruned_job_is_told_pruned_a_failed_one_fail(tmp_path):
    s = sweeper(f"sqlite:///{tmp_path}/optuna.db")
    study = s._open_study([])

    def job(status: JobStatus, value) -> JobReturn:
        ret = JobReturn(overrides=[], status=status)
        ret._return_value = value
        return ret

    outcomes = [
        job(JobStatus.COMPLETED, 0.75),
        job(JobStatus.FAILED, optuna.TrialPruned("stopped after epoch 2")),
        job(JobStatus.FAILED, RuntimeError("diverged")),
        # no value: a failure too
        job(JobStatus.COMPLETED, None),
    ]
    errors = [s._tell(study, study.ask(), ret) for ret in outcomes]
    assert [t.state for t in study.trials] == [State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL]
    assert study.trials[0].value == 0.75
    assert errors[:2] == [None, None] and isinstance(errors[2], RuntimeError) and errors[3] is not None


def fake_trainer(epoch: int, **metrics: float) -> SimpleNamespace:
    import torch

    return SimpleNamespace(
        current_epoch=epoch,
        sanity_checking=False,
        callback_metrics={k.replace("_", "/"): torch.tensor(v) for k, v in metrics.items()},
    )


def test_the_pruning_callback_reports_each_epoch_and_raises_trial_pruned():
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    good = study.ask()
    for step, acc in [(1, 0.6), (2, 0.8), (3, 0.9)]:
        good.report(acc, step)
    study.tell(good, 0.9)

    cb = OptunaPruning(pruner=pruner)
    cb.trial = study.ask()
    cb.on_validation_end(fake_trainer(0, val_acc=0.3), None)
    # epoch 1 is in the warm-up (n_warmup_steps=2 epochs): reported, not pruned, however bad
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.3)}
    # a second validation in epoch 1: not reported
    cb.on_validation_end(fake_trainer(0, val_acc=0.1), None)
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.3)}
    with pytest.raises(optuna.TrialPruned, match=r"after epoch 2 by MedianPruner \(val/acc=0.4000\)"):
        cb.on_validation_end(fake_trainer(1, val_acc=0.4), None)

    # above the median: goes on
    cb = OptunaPruning(pruner=pruner)
    cb.trial = study.ask()
    cb.on_validation_end(fake_trainer(1, val_acc=0.85), None)
    assert study.trials[2].intermediate_values == {2: pytest.approx(0.85)}
    # pruner null: the job's trial is judged by a pruner that never prunes (current_trial loads it with this one)
    assert isinstance(OptunaPruning(pruner=None).pruner, optuna.pruners.NopPruner)


def test_the_pruning_callback_names_a_metric_that_is_not_logged():
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    cb = OptunaPruning(monitor="val/acuracy")
    cb.trial = optuna.create_study().ask()
    with pytest.raises(MisconfigurationException, match="monitor=val/acuracy is not logged; logged: val/acc"):
        cb.on_validation_end(fake_trainer(0, val_acc=0.5), None)


def as_job(cfg, mode: RunMode, num: int) -> None:
    """Hydra's view of the running job: `cfg` run in `mode` as job `num`."""
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num = mode, num
    HydraConfig.instance().set_config(cfg)


def test_a_job_finds_its_trial_by_its_number_and_a_single_run_has_none(tmp_path):
    cfg = search_config(tmp_path)
    study = sweeper(cfg.hydra.sweeper.storage)._open_study([])
    study.tell(study.ask(), 0.5)
    study.ask()
    try:
        as_job(cfg, RunMode.MULTIRUN, 1)
        trial = current_trial(optuna.pruners.NopPruner())
        assert trial.number == 1 and isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        as_job(cfg, RunMode.MULTIRUN, 0)
        with pytest.raises(RuntimeError, match="trial 0 of study fmnist is COMPLETE"):
            current_trial(optuna.pruners.NopPruner())
        as_job(cfg, RunMode.RUN, 0)
        assert current_trial(optuna.pruners.NopPruner()) is None
    finally:
        HydraConfig.instance().cfg = None


def test_only_a_resumed_search_may_go_into_a_folder_that_holds_a_sweep(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    check = CheckBeforeResuming(check="fmnist_lit.train.check_before_writing")
    with pytest.raises(SystemExit) as e:
        check.on_multirun_start(search_config(tmp_path))
    assert e.value.code == 2 and "already holds a sweep" in capsys.readouterr().err
    check.on_multirun_start(search_config(tmp_path, "hydra.sweeper.resume=true"))
    assert [p.name for p in tmp_path.iterdir()] == ["0"]


def test_the_leaderboard_lists_pruned_trials_apart_from_failures(tmp_path):
    metrics = {"params": 10, "epochs_run": 5, "wall_seconds": 1.0, "test_acc": 0.9, "val_acc_best": 0.91}
    fake_job(tmp_path, 0, ["optimizer.lr=0.001"], metrics)
    fake_job(tmp_path, 1, ["optimizer.lr=0.1"], error="TrialPruned: stopped after epoch 2 by MedianPruner")
    jobs = find_jobs(tmp_path)
    assert [(j.pruned, j.failed) for j in jobs] == [(False, False), (True, False)]
    summaries, failed = write_leaderboard(tmp_path)
    assert len(summaries) == 1 and failed == []
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Failed jobs: 0" in md
    assert "Pruned trials (stopped early by the Optuna pruner, not failures): 1" in md
    assert "- job `1` `optimizer.lr=0.1`: TrialPruned: stopped after epoch 2" in md
    csv = (tmp_path / "leaderboard.csv").read_text()
    assert csv.splitlines()[0].endswith(",failed,pruned") and csv.splitlines()[2].endswith("by MedianPruner")
    # a sweep whose only unfinished trial was pruned did not fail
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))


def _search(sweep: Path, root: Path, *extra: str) -> list[str]:
    """A tiny search on synthetic data: lr 0.003 learns, lr 1e-12 does not and is pruned after its first epoch
    (val/acc < 0.3); sampler seed 2 draws 0.003, 1e-12, 1e-12 for the first three trials."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hparams_search=optuna",
        f"data.root={root}",
        *TINY,
        "logger=csv",
        "report.enabled=false",
        "model.net.widths=[8,16,32]",
        "optimizer.lr=choice(0.003,1e-12)",
        "~callbacks.optuna_pruning.pruner",
        "+callbacks.optuna_pruning.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.3}",
        "hydra.sweeper.sampler.seed=2",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def _trials(sweep: Path) -> list:
    return optuna.load_study(study_name="fmnist", storage=f"sqlite:///{sweep}/optuna.db").trials


@pytest.mark.slow
def test_a_killed_search_is_continued_and_a_finished_one_extended(tmp_path, tiny_root):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(_search(sweep, tiny_root), stdout=log, stderr=log, env=env)
        # kill -9 once trials 0 (complete) and 1 (pruned) have ended and trial 2 has started
        deadline = time.time() + 240
        started = sweep / "2" / ".hydra" / "overrides.yaml"
        while not started.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    before = _trials(sweep)
    assert [t.state for t in before] == [State.COMPLETE, State.PRUNED, State.RUNNING]
    first_metrics = (sweep / "0" / "metrics.json").read_bytes()

    # the documented command: the same overrides plus the folder and resume
    proc = _run(_search(sweep, tiny_root, "hydra.sweeper.resume=true", "hydra.sweeper.n_trials=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(sweep)
    assert trials[0].value == before[0].value and trials[0].params == before[0].params
    assert trials[1].state == State.PRUNED
    assert trials[2].state == State.FAIL and trials[2].user_attrs[INTERRUPTED]
    assert len(trials) == 5 and sum(t.state != State.FAIL for t in trials) == 4
    assert (sweep / "0" / "metrics.json").read_bytes() == first_metrics

    # a finished study extended to 5 trials: one more, in a new folder
    proc = _run(_search(sweep, tiny_root, "hydra.sweeper.resume=true", "hydra.sweeper.n_trials=5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(sweep)
    assert len(trials) == 6 and trials[5].state in (State.COMPLETE, State.PRUNED)
    # every trial's outcome follows from its learning rate; job folder = trial number
    for t in trials[3:] + trials[:2]:
        assert t.state == (State.COMPLETE if t.params["optimizer.lr"] == 0.003 else State.PRUNED)
    jobs = find_jobs(sweep)
    assert [j.path.name for j in jobs] == [str(t.number) for t in trials]
    assert [j.overrides["optimizer.lr"] for j in jobs] == [str(t.params["optimizer.lr"]) for t in trials]
    md = (sweep / "leaderboard.md").read_text()
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert md.count("optimizer.lr=0.003` |") == len(complete)
    assert "Failed jobs: 1\n- job `2`" in md and "no metrics.json (killed" in md
    pruned = [t for t in trials if t.state == State.PRUNED]
    assert f"Pruned trials (stopped early by the Optuna pruner, not failures): {len(pruned)}" in md
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == max(
        t.value for t in complete
    )
