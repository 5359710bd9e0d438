"""Sweeps and scale-out on tiny synthetic data: multirun with a failing job + leaderboard, joblib, Optuna,
DDP on 2 CPU processes, and the SLURM launcher config (composes only: no cluster here)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from fmnist_lit import sweep as sweep_mod
from fmnist_lit.cli import CONF_DIR
from fmnist_lit.leaderboard import find_jobs, group, write_leaderboard
from fmnist_lit.synthetic import write_tiny_root
from fmnist_lit.utils import UserError
from tests.helpers import TINY, fake_job, run_script

pytest.importorskip(
    "hydra_plugins.hydra_optuna_sweeper", reason="install the sweep extra: pip install -e '.[sweep]'"
)


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory) -> Path:
    """Like tiny_root but with 201 test images: two DDP ranks get uneven shards (101 + 100)."""
    return write_tiny_root(tmp_path_factory.mktemp("odd_data"), n_test=201)


def multirun(
    tmp_path: Path, root: Path, *overrides: str, timeout: int = 300
) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path / "sweep"
    args = ("-m", f"data.root={root}", *TINY, "logger=csv", f"hydra.sweep.dir={sweep_dir}", *overrides)
    return run_script("train.py", *args, cwd=tmp_path, timeout=timeout), sweep_dir


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


@pytest.mark.slow
def test_multirun_survives_a_failed_job_and_builds_the_leaderboard(tmp_path, tiny_root):
    # 3 jobs; max_epochs=-5 is rejected by fmnist_lit.validate: that job fails, the other two must still run
    proc, sweep = multirun(tmp_path, tiny_root, "model=mlp", "trainer.max_epochs=1,-5,2")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 failed job(s)" in proc.stderr and "trainer.max_epochs=-5" in proc.stderr
    assert (sweep / "1" / "error.txt").read_text().startswith("UserError: trainer.max_epochs=-5")
    assert metrics(sweep / "0")["epochs_run"] == 1 and metrics(sweep / "2")["epochs_run"] == 2
    md = (sweep / "leaderboard.md").read_text()
    assert "`trainer.max_epochs=1`" in md and "`trainer.max_epochs=2`" in md
    assert "Failed jobs: 1" in md and "job `1` `trainer.max_epochs=-5`" in md
    assert (sweep / "leaderboard.png").stat().st_size > 0
    csv = (sweep / "leaderboard.csv").read_text()
    # the failed job has its line in the CSV too
    assert "trainer.max_epochs=-5" in csv

    # the script gives the same tables, and says (exit 1) that a job failed
    md_before = md
    proc = run_script("scripts/leaderboard.py", str(sweep))
    assert proc.returncode == 1 and (sweep / "leaderboard.md").read_text() == md_before


def test_leaderboard_averages_over_seeds_and_ranks_on_validation(tmp_path):
    base = {"params": 100, "epochs_run": 5, "wall_seconds": 10.0}
    # (test, val): cnn has the better test accuracy, mlp the better validation one, and the rows follow validation
    accs = {
        ("mlp", 0): (0.88, 0.93),
        ("mlp", 1): (0.90, 0.95),
        ("cnn", 0): (0.91, 0.90),
        ("cnn", 1): (0.93, 0.92),
        ("cnn", 2): (0.92, 0.91),
    }
    for i, ((model, seed), (acc, val)) in enumerate(accs.items()):
        fake_job(
            tmp_path,
            i,
            [f"model={model}", f"seed={seed}", "trainer.max_epochs=5"],
            {**base, "test_acc": acc, "val_acc_best": val, "seed": seed},
        )
    # killed: no metrics.json
    fake_job(tmp_path, 10, ["model=mlp", "seed=2", "trainer.max_epochs=5"], None)
    jobs = find_jobs(tmp_path)
    # numeric order
    assert [j.path.name for j in jobs] == ["0", "1", "2", "3", "4", "10"]
    rows, common = group(jobs)
    assert common == {"trainer.max_epochs": "5"}
    # best validation first, no seed column
    assert [r.config for r in rows] == [{"model": "mlp"}, {"model": "cnn"}]
    summaries, failed = write_leaderboard(tmp_path)
    mlp, cnn = summaries
    assert (
        cnn["n"] == 3
        and cnn["test_acc_mean"] == pytest.approx(0.92)
        and cnn["test_acc_std"] == pytest.approx(0.01)
    )
    assert cnn["val_acc_best_mean"] == pytest.approx(0.91) and cnn["val_acc_best_std"] == pytest.approx(0.01)
    assert (
        mlp["n"] == 2
        and mlp["test_acc_mean"] == pytest.approx(0.89)
        and mlp["val_acc_best_mean"] == pytest.approx(0.94)
    )
    assert [j.path.name for j in failed] == ["10"]
    rows = {r["config"]: r for r in csv.DictReader((tmp_path / "leaderboard.csv").open())}
    assert float(rows["model=cnn"]["test_acc_mean"]) == pytest.approx(0.92) and rows["model=cnn"]["n"] == "3"
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.index("`model=mlp`") < md.index("`model=cnn`") and "| 91.00 ± 1.00 | 92.00 ± 1.00 | 3 |" in md
    # the failed job is listed, not dropped
    assert "no metrics.json" in md


def test_leaderboard_shows_a_deleted_key_as_deleted_not_as_null(tmp_path):
    # Hydra records `~scheduler.max_lr` in a job's overrides.yaml as `~scheduler.max_lr=null`
    metrics = {"params": 100, "epochs_run": 5, "wall_seconds": 10.0, "test_acc": 0.9, "val_acc_best": 0.9}
    fake_job(tmp_path, 0, ["~scheduler.max_lr=null", "model.tta_flip=null"], metrics)
    fake_job(tmp_path, 1, ["~scheduler.max_lr=null", "model.tta_flip=true"], metrics)
    write_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Every job: `~scheduler.max_lr`" in md and "scheduler.max_lr=null" not in md
    # a key set to null stays `key=null`
    assert "`model.tta_flip=null`" in md


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_splitting_the_cores(tmp_path, tiny_root):
    proc, sweep = multirun(
        tmp_path,
        tiny_root,
        "model=mlp",
        "seed=0,1",
        "threads=null",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the plugin, not the basic launcher
    assert "Joblib.Parallel" in proc.stdout + proc.stderr
    cores = os.cpu_count() or 1
    for job in ("0", "1"):
        # 2 jobs x threads <= cores
        assert metrics(sweep / job)["threads"] == max(1, cores // 2)
    assert "Failed jobs: 0" in (sweep / "leaderboard.md").read_text()


@pytest.mark.slow
def test_optuna_three_trials_and_a_diverging_one_is_not_fatal(tmp_path, tiny_root):
    # lr=1e30 makes the loss inf/NaN in the first steps: FailOnNonFiniteLoss raises, Optuna records FAIL
    proc, sweep = multirun(
        tmp_path,
        tiny_root,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "model.net.widths=[8,16,32]",
        "optimizer.lr=choice(0.003,1e30)",
        "hydra.sweeper.sampler.seed=5",
    )
    # hparams_search sets fail_on_error=false
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = find_jobs(sweep)
    assert len(jobs) == 3
    diverged = [j for j in jobs if j.overrides["optimizer.lr"] == "1e+30"]
    # the seed picks both values
    assert diverged and all(j.failed and "diverged" in j.error for j in diverged)
    ok = [j for j in jobs if not j.failed]
    assert ok
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # the sweeper got val_acc_best (a validation metric) back from main()
    assert result["best_value"] == pytest.approx(max(j.metrics["val_acc_best"] for j in ok))
    assert "Failed experiment" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path, odd_root):
    run_dir = tmp_path / "ddp"
    proc = run_script(
        "train.py",
        f"data.root={odd_root}",
        *TINY,
        "logger=csv",
        "model=mlp",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=3",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = metrics(run_dir)
    # both uneven shards counted, none twice
    assert sum(map(sum, m["confusion_matrix"])) == 201
    assert m["global_steps"] == 3
    # one run folder
    assert not (run_dir / "ddp").exists() and len(list(run_dir.glob("**/metrics.json"))) == 1

    # the same checkpoint evaluated by one process on the whole test set
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={odd_root}", *TINY, "model=mlp"])
    GlobalHydra.instance().clear()
    model, dm = instantiate(cfg.model), instantiate(cfg.data)
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision=m["precision"],
    )
    logged = trainer.test(model, datamodule=dm, ckpt_path=m["best_checkpoint"], verbose=False)[0]
    assert m["test_acc"] == pytest.approx(logged["test/acc"], abs=1e-6)
    assert m["test_loss"] == pytest.approx(logged["test/loss"], rel=1e-5)
    probs = torch.cat(trainer.predict(model, datamodule=dm))
    assert m["confusion_matrix"] == [
        [int(((dm.test_y == t) & (probs.argmax(1) == p)).sum()) for p in range(10)] for t in range(10)
    ]


def test_slurm_launcher_config_composes(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=30",
                "trainer=ddp",
                "trainer.devices=4",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.tasks_per_node=4",
            ],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    lc = cfg.hydra.launcher
    assert lc._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (lc.partition, lc.timeout_min, lc.gpus_per_node, lc.tasks_per_node) == ("gpu", 30, 4, 4)
    assert lc.cpus_per_task > 0 and "submitit" in lc.submitit_folder
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4


def test_sweep_summary_exits_nonzero_when_every_job_failed(tmp_path):
    from omegaconf import OmegaConf

    from fmnist_lit.sweep import SweepSummary

    for i in range(2):
        fake_job(tmp_path, i, [f"seed={i}"], None)
    with pytest.raises(SystemExit) as e:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert e.value.code == 1 and "Failed jobs: 2" in (tmp_path / "leaderboard.md").read_text()
    SweepSummary(fail_on_error=False).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    )


def test_a_failure_record_is_whole_or_absent_and_the_first_wins(tmp_path, monkeypatch):
    # a DDP rank killed while writing (here: interrupted while formatting its traceback) leaves no error.txt, not an
    # empty one that would hide the other rank's record (CI once lost a monitor typo's message that way)
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_mod.traceback, "format_exception", killed)
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.record_failure(tmp_path, RuntimeError("rank 1"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    sweep_mod.record_failure(tmp_path, UserError("callbacks.model_checkpoint.monitor=val/acuracy"))
    sweep_mod.record_failure(tmp_path, RuntimeError("rank 0, later"))
    assert [p.name for p in tmp_path.iterdir()] == ["error.txt"]
    assert (tmp_path / "error.txt").read_text().startswith("UserError: callbacks.model_checkpoint.monitor=")
