"""Run and sweep folders: made and claimed before Hydra writes into them. Two processes never share one; a folder
that cannot be made is one `error:` line."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from fmnist_lit.cli import CONF_DIR, CheckBeforeWriting
from fmnist_lit.run_folder import claim, release_unused_sweep
from fmnist_lit.train import RUN_OUTPUTS
from fmnist_lit.utils import UserError
from fmnist_lit.validate import check_train_config
from tests.helpers import ROOT, TINY, compose_cfg, compose_with_hydra, run_script

CHECK = "fmnist_lit.train.check_before_writing"


def start_run(cfg: DictConfig, capsys) -> tuple[int, list[str]]:
    """CheckBeforeWriting.on_run_start as Hydra calls it: (exit status, stderr lines); 0 if it let the run go."""
    try:
        CheckBeforeWriting(CHECK).on_run_start(cfg)
    except SystemExit as e:
        return e.code, capsys.readouterr().err.splitlines()
    return 0, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_is_one_line(tmp_path, tiny_root, seed):
    with pytest.raises(UserError, match=rf"^seed={seed}: must be an integer in \[0, 4294967295\]"):
        check_train_config(compose_cfg(tmp_path, tiny_root, [f"seed={seed}"]))


def test_run_folder_under_a_file_is_one_line(tmp_path, tiny_root, capsys):
    (tmp_path / "parent").write_text("a file, not a folder")
    run_dir = tmp_path / "parent" / "run"
    code, err = start_run(compose_with_hydra(tiny_root, [f"hydra.run.dir={run_dir}"]), capsys)
    want = (
        f"error: hydra.run.dir={run_dir}: cannot create it: Not a directory; a file stands where a folder of its "
        "path should be; choose another hydra.run.dir"
    )
    assert code == 2 and err == [want]


def test_unwritable_parent_is_one_line(tmp_path, tiny_root, capsys, monkeypatch):
    """The tests run as root, whom a read-only mode does not stop: os.mkdir refuses as it would refuse a user."""
    run_dir = tmp_path / "parent" / "run"

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    code, err = start_run(compose_with_hydra(tiny_root, [f"hydra.run.dir={run_dir}"]), capsys)
    monkeypatch.undo()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: hydra.run.dir={run_dir}: cannot create it: Permission denied")
    assert "the folder above it must be writable" in err[0] and not (tmp_path / "parent").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["seed", "parent_is_a_file"])
def test_seed_and_run_folder_cli_are_one_line_and_write_nothing(tmp_path, tiny_root, case):
    (tmp_path / "parent").write_text("a file")
    run_dir = tmp_path / ("run" if case == "seed" else "parent/run")
    overrides = ["seed=-1"] if case == "seed" else []
    proc = run_script(
        "train.py", f"data.root={tiny_root}", *TINY, f"hydra.run.dir={run_dir}", *overrides, cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {overrides[0] if overrides else 'hydra.run.dir'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parent"]


# ---- two processes never share a folder -----------------------------------------------------------------------


def _claim_in_a_process(folder: str, rename: bool, start, results) -> None:
    start.wait()
    try:
        results.put(str(claim("hydra.run.dir", Path(folder), rename, ".hydra", None, lambda name: None)))
    except UserError as e:
        results.put(f"error: {e}")


def claims_made_together(folder: Path, rename: bool, n: int = 8) -> list[str]:
    """What `n` processes, let go at the same moment, each claimed of `folder`."""
    start, results = multiprocessing.Barrier(n), multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_claim_in_a_process, args=(str(folder), rename, start, results))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    return sorted(got)


def test_processes_started_together_each_claim_their_own_folder(tmp_path):
    folder = tmp_path / "outputs" / "12-00-00"
    assert claims_made_together(folder, rename=True) == sorted(
        [str(folder), *(f"{folder}-{n}" for n in range(1, 8))]
    )


def test_a_typed_folder_goes_to_one_of_processes_started_together(tmp_path):
    folder = tmp_path / "run"
    # the user's folder may exist already and hold the user's files
    folder.mkdir()
    (folder / "stdout.log").write_text("")
    got = claims_made_together(folder, rename=False)
    assert got[0] == str(folder)
    assert (
        got[1:]
        == [f"error: hydra.run.dir={folder} is another run's (it holds .hydra): choose a new hydra.run.dir"]
        * 7
    )


def test_a_taken_default_name_gives_way_to_the_next_and_a_typed_one_is_refused(
    tmp_path, tiny_root, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = compose_with_hydra(tiny_root, [])
    # `${now:...}` is resolved once per config: the same name on every read
    default = Path(str(cfg.hydra.run.dir))
    (default / ".hydra").mkdir(parents=True)
    assert start_run(cfg, capsys)[0] == 0
    assert cfg.hydra.run.dir == f"{default}-1" and (tmp_path / f"{default}-1" / ".hydra").is_dir()

    typed = compose_with_hydra(tiny_root, [f"hydra.run.dir={default}"])
    code, err = start_run(typed, capsys)
    assert code == 2 and err == [
        f"error: hydra.run.dir={default} is another run's (it holds .hydra): choose a new hydra.run.dir"
    ]


@pytest.mark.parametrize("entry_point", ["eval", "export"])
def test_eval_and_export_claim_their_folders_too(tmp_path, capsys, monkeypatch, entry_point):
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(entry_point, overrides=[f"ckpt_path={tmp_path / 'x.ckpt'}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    default = Path(str(cfg.hydra.run.dir))
    (default / ".hydra").mkdir(parents=True)
    callback = instantiate(cfg.hydra.callbacks.check_before_writing)
    # eval.py's own check wants a real checkpoint: only the claim is under test here
    callback.check = None
    callback.on_run_start(cfg)
    assert cfg.hydra.run.dir == f"{default}-1" and (tmp_path / f"{default}-1" / ".hydra").is_dir()


def test_a_sweep_that_started_no_job_leaves_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    claim("hydra.sweep.dir", sweep, False, "multirun.yaml", "", lambda name: None)
    release_unused_sweep(sweep, made=True)
    assert not sweep.exists()
    # one that started a job keeps everything
    claim("hydra.sweep.dir", sweep, False, "multirun.yaml", "", lambda name: None)
    (sweep / "0").mkdir()
    release_unused_sweep(sweep, made=True)
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]


# `${now:...}` frozen: processes started in different seconds compose the same default folder, as those started
# in the same second do
FROZEN_CLOCK = """
import datetime
import hydra.core.utils

class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2000, 1, 1, 12, 0, 0)

hydra.core.utils.datetime = Frozen
"""
QUICK = ["model=mlp", "logger=csv", "report.enabled=false", "callbacks.progress_bar=null"]


def start_together(
    tmp_path: Path, tiny_root: Path, n: int, *overrides: str
) -> list[subprocess.CompletedProcess]:
    """`n` train.py processes (seeds 0..n-1) started at once from tmp_path, with a frozen clock."""
    code = (
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{FROZEN_CLOCK}\nimport runpy\nsys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    args = [*overrides, f"data.root={tiny_root}", *TINY, *QUICK]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(ROOT / "train.py"), *args, f"seed={seed}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(600), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_runs_started_together_with_the_default_folder_each_get_their_own(tmp_path, tiny_root):
    procs = start_together(tmp_path, tiny_root, 4)
    for proc in procs:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    day = tmp_path / "outputs" / "2000-01-01"
    assert sorted(p.name for p in day.iterdir()) == ["12-00-00", "12-00-00-1", "12-00-00-2", "12-00-00-3"]
    seeds = set()
    for folder in day.iterdir():
        # one run per folder: its own log, config and metrics, all of the same seed
        log = (folder / "train.log").read_text()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert log.count("run folder: ") == 1 and log.count("test/acc=") == 1, log
        assert f"seed={metrics['seed']}" in (folder / ".hydra" / "overrides.yaml").read_text().replace(
            "- ", ""
        )
        assert str(folder) in log
        seeds.add(metrics["seed"])
    assert seeds == {0, 1, 2, 3}
    # the three that gave way said so
    notes = [
        p.stderr + p.stdout for p in procs if "is another run's: this one writes to" in p.stderr + p.stdout
    ]
    assert len(notes) == 3


@pytest.mark.slow
def test_runs_started_together_into_a_typed_folder_one_runs_the_others_are_refused(tmp_path, tiny_root):
    run_dir = tmp_path / "run"
    procs = start_together(tmp_path, tiny_root, 4, f"hydra.run.dir={run_dir}")
    done = [p for p in procs if p.returncode == 0]
    refused = [p for p in procs if p.returncode == 2]
    assert len(done) == 1 and len(refused) == 3, [p.stderr[-2000:] for p in procs]
    # a process that starts late (a slow start on a loaded machine) meets the winner's checkpoints/ or, once it
    # has finished, its metrics.json before its claim: refused as well, in the same one line
    either = [
        f"error: hydra.run.dir={run_dir} is another run's (it holds .hydra): choose a new hydra.run.dir",
        *(f"error: {run_dir / made} already exists: choose a new hydra.run.dir" for made in RUN_OUTPUTS),
    ]
    for proc in refused:
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and lines[0] in either, proc.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert log.count("run folder: ") == 1 and (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_sweeps_started_together_with_the_default_folder_each_get_their_own(tmp_path, tiny_root):
    procs = start_together(tmp_path, tiny_root, 2, "-m")
    for proc in procs:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    day = tmp_path / "outputs" / "multirun" / "2000-01-01"
    assert sorted(p.name for p in day.iterdir()) == ["12-00-00", "12-00-00-1"]
    # each sweep's job in its own sweep folder, and each leaderboard of its own job
    seeds = {json.loads((sweep / "0" / "metrics.json").read_text())["seed"] for sweep in day.iterdir()}
    assert seeds == {0, 1} and all((sweep / "leaderboard.md").is_file() for sweep in day.iterdir())
