"""The run folder: made before Hydra writes into it, one `error:` line when it cannot be."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from fmnist_lit.cli import CONF_DIR, CheckBeforeWriting
from fmnist_lit.utils import UserError
from fmnist_lit.validate import check_train_config
from tests.conftest import TINY, compose_cfg, run_script

CHECK = "fmnist_lit.train.check_before_writing"


def compose_with_hydra(root: Path, overrides: list[str]) -> DictConfig:
    """conf/train.yaml as the CLI composes it (with its `hydra` node), forced tiny."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={root}", *TINY, *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


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
