"""Fault injection: every bad input and failure through the real entry points (train.py, eval.py,
sweeps; subprocesses, `slow`), each with a fast in-process equivalent where there is one.

What every case must give: one `error:` line on stderr naming the key, the bad value and what is allowed, exit
status 2, no traceback, and nothing changed on disk; sweeps list a failed job and go on.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from fmnist_lit import fashion_mnist
from fmnist_lit.callbacks import NonFiniteLossError
from fmnist_lit.cli import CONF_DIR, hydra_error_line
from fmnist_lit.csv_data import CSVFormatError, read_csv, write_csv
from fmnist_lit.fashion_mnist import DatasetError, prepare_raw
from fmnist_lit.leaderboard import find_jobs, write_leaderboard
from fmnist_lit.optim import one_cycle_pct_start
from fmnist_lit.photo import to_fmnist
from fmnist_lit.synthetic import make_images, write_tiny_root
from fmnist_lit.train import check_before_writing, run
from fmnist_lit.utils import UserError, write_json
from fmnist_lit.validate import check_eval_config, check_train_config
from tests import helpers
from tests.helpers import ROOT, TINY, assert_one_error_line, compose_cfg, fake_job, run_script

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
NO_GPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the case is a GPU asked for where there is none"
)

# (override, what the one error line must say): the settings of the issue, refused before anything is written
BAD_SETTINGS = [
    ("optimizer.lr=-1", "optimizer.lr=-1: must be a positive number"),
    ("optimizer.lr=abc", "optimizer.lr=abc: must be a positive number"),
    ("seed=abc", "seed=abc: must be an integer"),
    ("scheduler.pct_start=1.5", "scheduler.pct_start=1.5: must be a number in (0, 1)"),
    ("trainer.precision=foo", "trainer.precision=foo: must be one of auto, 32-true"),
    pytest.param("trainer.accelerator=gpu", "trainer.accelerator=gpu: no CUDA GPU", marks=NO_GPU),
    ("threads=0", "threads=0: must be a positive integer"),
    ("threads=-2", "threads=-2: must be a positive integer"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: this LR schedule needs a finite run length"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: nothing would be trained"),
    ("data.batch_size=0", "data.batch_size=0: must be a positive integer"),
]
# Hydra's own errors while composing: the same one-line form
BAD_COMPOSITION = [
    ("model=nosuch", "model=nosuch: Could not find 'model/nosuch'; the options are bn_gap, fast_cnn, mlp"),
    ("nosuchkey=1", "nosuchkey=1: no such key in the config"),
    ("trainer.nosuch=1", "trainer.nosuch=1: no such key in the config"),
    ("trainer.max_epochs=[1", "trainer.max_epochs=[1: not a valid override"),
    ("model=null", "model=null: this config group needs an option"),
]


def cli(script: str, tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """`python <script> args` from tmp_path (helpers.run_script)."""
    return run_script(script, *args, cwd=tmp_path, **kw)


def train_cli(tmp_path: Path, root: Path, *overrides: str, run_dir: Path | None = None, **kw):
    """helpers.train_cli with a flat MLP, a CSV log and no report."""
    flat = ("logger=csv", "report.enabled=false", "model=mlp")
    return helpers.train_cli(tmp_path, root, *flat, *overrides, run_dir=run_dir, **kw)


def compose_eval(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


# ---- bad settings: one line, exit 2, no run folder ----------------------------------------------------------------


@pytest.mark.parametrize("override, message", BAD_SETTINGS)
def test_bad_setting_is_one_line(tmp_path, tiny_root, override, message):
    cfg = compose_cfg(tmp_path, tiny_root, [override])
    with pytest.raises(UserError) as e:
        check_train_config(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_settings_pass(tmp_path, tiny_root):
    for overrides in (
        [],
        ["scheduler=null", "trainer.max_epochs=-1"],
        ["seed=null", "threads=null"],
        ["trainer.precision=32-true", "trainer.accelerator=cpu"],
    ):
        check_train_config(compose_cfg(tmp_path, tiny_root, overrides))


@pytest.mark.slow
@pytest.mark.parametrize("override, message", BAD_SETTINGS + BAD_COMPOSITION)
def test_bad_setting_cli_is_one_line_and_writes_nothing(tmp_path, tiny_root, override, message):
    proc, run_dir = train_cli(tmp_path, tiny_root, override)
    assert_one_error_line(proc, message)
    # refused before Hydra created the run folder
    assert not run_dir.exists()


@pytest.mark.parametrize("override, message", BAD_COMPOSITION[:-1])
def test_hydra_composition_errors_are_one_line(override, message):
    GlobalHydra.instance().clear()
    with pytest.raises(Exception) as e, initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose("train", overrides=[override])
    GlobalHydra.instance().clear()
    line = hydra_error_line(e.value, [override])
    assert message in line and "\n" not in line


# ---- data root, raw files, disk full --------------------------------------------------------------------------------


def _gz_copy(tmp_path: Path) -> Path:
    """A system-copy folder (like /usr/share/datasets/fashion-mnist) holding the tiny set as .gz files."""
    raw = write_tiny_root(tmp_path / "src") / "FashionMNIST" / "raw"
    gz = tmp_path / "system"
    gz.mkdir()
    for f in raw.iterdir():
        (gz / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    return gz


def test_data_root_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match=r"data.root=.*/f: .*Not a directory; data.root must be a folder"):
        prepare_raw(tmp_path / "f", download=False, check_md5=False)


def test_raw_file_is_a_directory(tmp_path):
    root = write_tiny_root(tmp_path / "r")
    f = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.unlink()
    f.mkdir()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: Is a directory; this must be a file"):
        prepare_raw(root, download=False, check_md5=False)


@pytest.mark.parametrize(
    "err, message",
    [
        (errno.ENOSPC, "No space left on device; free some disk space"),
        (errno.EACCES, "Permission denied; data.root must be a folder you can read"),
        (errno.EROFS, "Read-only file system; data.root is on a read-only file system"),
    ],
)
def test_decompressing_into_an_unwritable_root(tmp_path, monkeypatch, err, message):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", _gz_copy(tmp_path))

    # the first write fails as the OS would
    def fail(src, dst, *a):
        raise OSError(err, os.strerror(err), dst.name)

    monkeypatch.setattr(fashion_mnist.shutil, "copyfileobj", fail)
    with pytest.raises(DatasetError, match=message) as e:
        prepare_raw(tmp_path / "root", download=False, check_md5=False)
    assert "\n" not in str(e.value)
    # no partial file left behind
    assert not list((tmp_path / "root").rglob("*.part"))


def test_unreadable_root(tmp_path, monkeypatch):
    root = write_tiny_root(tmp_path / "r")
    real_stat = os.stat

    # root bypasses chmod, so the OS's answer for `chmod 000 root` is injected
    def stat(path, *a, **k):
        if str(path).startswith(str(root)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(DatasetError, match="Permission denied; data.root must be a folder you can read"):
        prepare_raw(root, download=False, check_md5=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permissions say")
def test_read_only_root_for_real(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", _gz_copy(tmp_path))
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(DatasetError, match="Permission denied"):
        prepare_raw(tmp_path / "ro", download=False, check_md5=False)


# the system copy is the test's; the disk fills up at the first write
DISK_FULL = """
import errno, os, shutil
from pathlib import Path
import fmnist_lit.fashion_mnist as d
d.SYSTEM_DIR = Path(os.environ["FAULT_SYSTEM_DIR"])
def full(src, dst, *a):
    raise OSError(errno.ENOSPC, "No space left on device", dst.name)
shutil.copyfileobj = full
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", ["root_is_file", "raw_is_dir", "disk_full"])
def test_data_faults_cli(tmp_path, case):
    patch, env = "", {}
    if case == "root_is_file":
        root, message = tmp_path / "f", "Not a directory; data.root must be a folder"
        root.write_text("x")
    elif case == "raw_is_dir":
        root, message = write_tiny_root(tmp_path / "r"), "Is a directory; this must be a file"
        f = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
        f.unlink()
        f.mkdir()
    else:
        root, message = tmp_path / "empty", "No space left on device; free some disk space"
        patch, env = DISK_FULL, {"FAULT_SYSTEM_DIR": str(_gz_copy(tmp_path))}
    proc, _ = train_cli(tmp_path, root, patch=patch, env=env)
    assert_one_error_line(proc, message)
    assert not list(tmp_path.rglob("*.part"))


# ---- short runs and the OneCycle schedule -------------------------------------------------------------------------


def test_one_cycle_works_for_any_number_of_steps():
    for total in range(1, 40):
        for pct in (0.05, 0.1, 0.25, 0.3, 0.5, 0.9):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=1.0, total_steps=total, pct_start=one_cycle_pct_start(pct, total)
            )
            for _ in range(total - 1):
                opt.step()
                sched.step()
    assert one_cycle_pct_start(0.25, 4) == 0.5 and one_cycle_pct_start(0.25, 100) == 0.25


def test_four_steps_train_and_resuming_longer_is_one_line(tmp_path, tiny_root):
    # 4 optimiser steps at pct_start=0.25 was a ZeroDivisionError inside OneCycleLR
    m = run(
        compose_cfg(
            tmp_path / "a",
            tiny_root,
            ["model=mlp", "logger=csv", "report.enabled=false", "++trainer.limit_train_batches=4"],
        )
    )
    assert m["global_steps"] == 4
    last = Path(m["best_checkpoint"]).parent / "last.ckpt"
    with pytest.raises(UserError, match="planned for 4 steps, this run needs 8"):
        run(
            compose_cfg(
                tmp_path / "b",
                tiny_root,
                [
                    "model=mlp",
                    "logger=csv",
                    "report.enabled=false",
                    "++trainer.limit_train_batches=4",
                    "trainer.max_epochs=2",
                    f"ckpt_path={last}",
                ],
            )
        )


@pytest.mark.slow
def test_resume_with_larger_max_epochs_cli(tmp_path, tiny_root):
    proc, run_dir = train_cli(tmp_path, tiny_root, "++trainer.limit_train_batches=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = train_cli(
        tmp_path,
        tiny_root,
        "++trainer.limit_train_batches=4",
        "trainer.max_epochs=3",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        run_dir=tmp_path / "resumed",
    )
    assert_one_error_line(proc, "LR schedule was planned for 4 steps, this run needs 12")


# ---- divergence, strict metrics.json, leaderboard -----------------------------------------------------------------


def test_divergence_stops_the_run_by_default(tmp_path, tiny_root):
    with pytest.raises(NonFiniteLossError, match="the run diverged"):
        run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "logger=csv", "optimizer.lr=1e6"]))
    assert not (tmp_path / "metrics.json").exists()


def test_metrics_json_is_strict(tmp_path):
    write_json(
        tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": torch.tensor(float("nan"))}
    )

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "a": None,
        "b": [None, 1.0],
        "c": None,
    }


def test_leaderboard_lists_truncated_or_nan_metrics_as_failed(tmp_path):
    good = json.dumps(
        {"test_acc": 0.9, "val_acc_best": 0.9, "params": 1, "epochs_run": 1, "wall_seconds": 1.0, "seed": 0}
    )
    fake_job(tmp_path, 0, ["seed=0"], good)
    # truncated: the job was killed while writing
    fake_job(tmp_path, 1, ["seed=1"], good[:25])
    # written before metrics.json was strict
    fake_job(tmp_path, 2, ["seed=2"], '{"test_acc": NaN}')
    # the ranking key, edited by hand
    fake_job(tmp_path, 3, ["seed=3"], '{"test_acc": 0.9, "val_acc_best": "0.9"}')
    summaries, failed = write_leaderboard(tmp_path)
    assert summaries[0]["n"] == 1 and [j.path.name for j in failed] == ["1", "2", "3"]
    assert "truncated or not JSON" in failed[0].error and "diverged" in failed[1].error
    assert "val_acc_best that is not a number" in failed[2].error
    assert "Failed jobs: 3" in (tmp_path / "leaderboard.md").read_text()


def sweep_cli(tmp_path: Path, root: Path, sweep: Path, *overrides: str, timeout: int = 300):
    """A tiny MLP multirun of train.py into `sweep`."""
    common = [f"data.root={root}", *TINY, "logger=csv", "report.enabled=false", "model=mlp"]
    return cli("train.py", tmp_path, "-m", *common, f"hydra.sweep.dir={sweep}", *overrides, timeout=timeout)


@pytest.mark.slow
def test_divergence_cli_and_in_a_sweep(tmp_path, tiny_root):
    proc, run_dir = train_cli(tmp_path, tiny_root, "optimizer.lr=1e6")
    assert_one_error_line(proc, "the run diverged; lower optimizer.lr")
    assert not (run_dir / "metrics.json").exists()

    sweep = tmp_path / "sweep"
    proc = sweep_cli(tmp_path, tiny_root, sweep, "optimizer.lr=1e6,0.002")
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = find_jobs(sweep)
    assert [j.failed for j in jobs] == [True, False] and "diverged" in jobs[0].error
    assert "Failed jobs: 1" in (sweep / "leaderboard.md").read_text()


# ---- refused runs write nothing -----------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_existing_run_folder_is_refused_before_writing(tmp_path, tiny_root):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="metrics.json already exists"):
        check_before_writing(compose_cfg(tmp_path, tiny_root), tmp_path)


# a plain setting; one of a callback whose other settings hold ${paths.output_dir}; one whose settings hold
# ${hydra:runtime.choices.model} (the CLI resolves it from the composed config, before the job starts)
REFUSED = [
    ("callbacks.ema.decay=1.5", "callbacks.ema: Invalid decay value 1.5"),
    ("callbacks.model_checkpoint.mode=maxx", "callbacks.model_checkpoint: `mode` can be min, max"),
    ("callbacks.report.graph=maybe", "callbacks.report: graph must be true or false, got 'maybe'"),
]


@pytest.mark.parametrize("override, message", REFUSED)
def test_a_callback_refusing_a_value_is_refused_before_writing(tmp_path, tiny_root, override, message):
    cfg = compose_cfg(tmp_path / "run", tiny_root, ["experiment=resnet", override])
    with pytest.raises(UserError, match="^" + re.escape(message)):
        check_before_writing(cfg, tmp_path / "run")
    check_before_writing(compose_cfg(tmp_path / "run", tiny_root, ["experiment=resnet"]), tmp_path / "run")
    # building the checkpoint callbacks made no folder
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("override, message", REFUSED)
def test_a_callback_refusing_a_value_cli_writes_nothing(tmp_path, tiny_root, override, message):
    proc, run_dir = train_cli(tmp_path, tiny_root, "experiment=resnet", override)
    assert_one_error_line(proc, message)
    # before: the run folder was left holding train.log
    assert not run_dir.exists()


@pytest.mark.slow
def test_rerun_into_a_run_folder_changes_nothing(tmp_path, tiny_root):
    proc, run_dir = train_cli(tmp_path, tiny_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = _snapshot(run_dir)
    proc, _ = train_cli(tmp_path, tiny_root, "seed=1")
    assert_one_error_line(proc, "metrics.json already exists: choose a new hydra.run.dir")
    # .hydra/ and train.log included
    assert _snapshot(run_dir) == before

    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    ev = [f"ckpt_path={ckpt}", f"data.root={tiny_root}", "report.enabled=false", "threads=1"]
    proc = cli("eval.py", tmp_path, *ev, f"hydra.run.dir={tmp_path / 'ev'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before_eval = _snapshot(tmp_path / "ev")
    for out, message in [
        (tmp_path / "ev", "metrics.json already exists"),
        (run_dir / "eval", "is inside the evaluated run"),
    ]:
        proc = cli("eval.py", tmp_path, *ev, f"hydra.run.dir={out}")
        assert_one_error_line(proc, message)
    assert _snapshot(tmp_path / "ev") == before_eval and _snapshot(run_dir) == before


@pytest.mark.slow
def test_second_sweep_into_a_sweep_folder_is_refused(tmp_path, tiny_root):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["seed=0"], {"test_acc": 0.5})
    before = _snapshot(sweep)
    proc = cli(
        "train.py",
        tmp_path,
        "-m",
        f"data.root={tiny_root}",
        *TINY,
        "model=mlp",
        f"hydra.sweep.dir={sweep}",
        "seed=1,2",
    )
    assert_one_error_line(proc, f"hydra.sweep.dir={sweep} already holds a sweep")
    assert _snapshot(sweep) == before and sorted(p.name for p in sweep.iterdir()) == ["0"]


@pytest.mark.slow
def test_a_sweep_whose_first_job_never_started_does_not_block_its_folder(tmp_path, tiny_root):
    # a key only job composition rejects, once the sweep folder is claimed: it is given back, empty, at exit
    sweep = tmp_path / "sweep"
    args = ["-m", f"data.root={tiny_root}", *TINY, "model=mlp", f"hydra.sweep.dir={sweep}"]
    proc = cli("train.py", tmp_path, *args, "model.net.nosuch=1,2")
    assert_one_error_line(proc, "no such key in the config")
    assert not sweep.exists()
    proc = cli("train.py", tmp_path, *args, "seed=1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"0", "1", "leaderboard.md"} <= {p.name for p in sweep.iterdir()}


# ---- CSV ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def csv_lines(tmp_path) -> list[str]:
    write_csv(tmp_path / "ok.csv", *make_images(4, 0))
    return (tmp_path / "ok.csv").read_text().splitlines()


def _bad_label(line: str) -> str:
    return ",".join(["12", *line.split(",")[1:]])


@pytest.mark.parametrize(
    "case, message",
    [
        ("bom_no_header", "x.csv:1: expected a header line"),
        ("hash_line", "x.csv:3: a `#` line: this format has no comments"),
        ("blank_then_bad", "x.csv:5: label 12 is outside 0..9"),
        ("huge_field", "x.csv:3: not a CSV row of label,pixel1..pixel784 (field larger than field limit"),
    ],
)
def test_csv_faults(tmp_path, csv_lines, case, message):
    header, rows = csv_lines[0], csv_lines[1:]
    text = {
        # the first row must not be taken for a header
        "bom_no_header": "\ufeff" + "\n".join(rows),
        "hash_line": "\n".join([header, rows[0], "# exported by a spreadsheet", *rows[1:]]),
        "blank_then_bad": "\n".join([header, rows[0], "", rows[1], _bad_label(rows[2])]),
        "huge_field": "\n".join([header, rows[0], "1" * 200_000 + "," + rows[1].split(",", 1)[1]]),
    }[case]
    (tmp_path / "x.csv").write_text(text + "\n")
    with pytest.raises(CSVFormatError) as e:
        read_csv(tmp_path / "x.csv")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_csv_with_bom_and_header_reads_every_row(tmp_path, csv_lines):
    (tmp_path / "x.csv").write_text("\ufeff" + "\n".join(csv_lines) + "\n\n")
    assert len(read_csv(tmp_path / "x.csv")[1]) == 4


@pytest.mark.slow
def test_csv_fault_cli(tmp_path, csv_lines):
    (tmp_path / "train.csv").write_text("\ufeff" + "\n".join(csv_lines[1:]) + "\n")
    proc, _ = train_cli(
        tmp_path,
        tmp_path,
        "data=csv",
        f"data.train_csv={tmp_path / 'train.csv'}",
        f"data.test_csv={tmp_path / 'train.csv'}",
    )
    assert_one_error_line(proc, "train.csv:1: expected a header line")


# ---- logging off, eval.py's settings, Ctrl-C, images --------------------------------------------------------------


@pytest.mark.parametrize("logger", ["logger=[]", "~logger"])
def test_training_without_any_logger(tmp_path, tiny_root, logger):
    m = run(compose_cfg(tmp_path, tiny_root, ["model=mlp", logger, "report.enabled=false"]))
    assert (
        m["epochs_run"] == 1 and not (tmp_path / "csv").exists() and not (tmp_path / "tensorboard").exists()
    )


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["logger=null", "logger=[]"])
def test_training_without_any_logger_cli(tmp_path, tiny_root, logger):
    proc, run_dir = train_cli(tmp_path, tiny_root, logger)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "csv").exists()


def test_eval_refuses_settings_it_would_ignore():
    with pytest.raises(
        UserError,
        match=r"trainer.limit_test_batches=5: eval.py has no such setting \(it takes "
        r"accelerator, ckpt_path, data.root",
    ):
        check_eval_config(compose_eval(["ckpt_path=x.ckpt", "++trainer.limit_test_batches=5"]))
    check_eval_config(compose_eval(["ckpt_path=x.ckpt", "data.root=d", "threads=2", "report.enabled=false"]))


@pytest.mark.slow
def test_eval_refuses_settings_it_would_ignore_cli(tmp_path):
    proc = cli(
        "eval.py",
        tmp_path,
        "ckpt_path=x.ckpt",
        "++trainer.limit_test_batches=5",
        f"hydra.run.dir={tmp_path / 'ev'}",
    )
    assert_one_error_line(proc, "trainer.limit_test_batches=5: eval.py has no such setting")
    assert not (tmp_path / "ev").exists()


@pytest.mark.slow
def test_ctrl_c_ends_with_the_resume_hint(tmp_path, tiny_root):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"data.root={tiny_root}",
        *TINY,
        "logger=csv",
        "model=mlp",
        "scheduler=null",
        "trainer.max_epochs=1000",
        f"hydra.run.dir={run_dir}",
    ]
    # SIGINT as a terminal's Ctrl-C finds it. A test run from a background job (`make test-slow &`) inherits an
    # ignored SIGINT, which exec keeps, and Python then installs no KeyboardInterrupt handler (the run would go on
    # for 1000 epochs); a handled signal is reset to the default by exec, so handle it here while starting the run.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, before)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    # once, with where last.ckpt stands (it is rewritten mid-epoch) and the command that resumes
    hint = re.compile(
        r"resume from last\.ckpt \(written at step \d+, in epoch \d+\).*ckpt_path=" + re.escape(str(last))
    )
    assert len(hint.findall(out)) == 1 and "Traceback" not in err, out[-3000:]
    assert len(hint.findall((run_dir / "train.log").read_text())) == 1


def test_decompression_bomb_image_is_one_line(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "bomb.png")
    # 1,600 pixels > 2 x the limit: PIL's bomb error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(UserError, match="bomb.png: refused as a possible decompression bomb"):
        to_fmnist(tmp_path / "bomb.png")


# ---- a DDP sweep with a failing job -------------------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        try:
            cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and p.name != str(os.getpid()):
            found.append(f"{p.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
def test_ddp_sweep_with_a_failing_job_goes_on_and_leaves_no_process(tmp_path, tiny_root):
    sweep = tmp_path / "sweep"
    proc = sweep_cli(
        tmp_path,
        tiny_root,
        sweep,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "callbacks.model_checkpoint.monitor=val/acuracy,val/acc",
        timeout=600,
    )
    # was SIGKILLed (137)
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = find_jobs(sweep)
    assert [j.failed for j in jobs] == [True, False]
    assert "monitor='val/acuracy'" in jobs[0].error and jobs[1].metrics["epochs_run"] == 1
    md = (sweep / "leaderboard.md").read_text()
    assert "Failed jobs: 1" in md and "callbacks.model_checkpoint.monitor=val/acuracy" in md
    assert "1 failed job(s)" in proc.stderr
    # no rank outlives the sweep
    assert _processes_mentioning(str(sweep)) == []
