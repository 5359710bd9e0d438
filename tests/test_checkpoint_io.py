"""Checkpoint writes that do not finish: a killed write's temporary file is removed by the run that resumes; a
full disk stops the run with one line, the last whole checkpoint kept, and the same command resumes it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import torch

from fmnist_lit.resume import AtomicCheckpointIO, DiskFullError
from fmnist_lit.train import run
from tests.helpers import TINY, compose_cfg, run_script
from tests.kill_points import DiskFullAt

FLAT = ["model=mlp", "logger=csv", "report.enabled=false", "scheduler=null"]


def test_reading_a_checkpoint_removes_the_temporary_files_of_killed_writes_only(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    killed = tmp_path / ".last.ckpt.tmp"
    killed.write_bytes(b"half a checkpoint")
    # a write in progress (another process resumed from this folder while its run goes on) holds its lock
    in_progress = tmp_path / ".epoch=3.ckpt.tmp"
    in_progress.write_bytes(b"being written")
    # not a checkpoint's temporary file: never touched
    other = tmp_path / ".notes.tmp"
    other.write_text("someone's")
    with in_progress.open("ab") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert io.load_checkpoint(tmp_path / "last.ckpt")["step"] == 1
    assert not killed.exists() and in_progress.exists() and other.exists()


def test_the_resumed_run_removes_a_killed_writes_temporary_file(tmp_path, tiny_root):
    run(compose_cfg(tmp_path / "a", tiny_root, [*FLAT, "trainer.max_epochs=1"]))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # what kill -9 during a write leaves: the previous last.ckpt whole, half of the next one beside it
    leftover = last.with_name(".last.ckpt.tmp")
    leftover.write_bytes(last.read_bytes()[:1000])
    run(compose_cfg(tmp_path / "b", tiny_root, [*FLAT, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert not leftover.exists()
    assert torch.load(last, weights_only=True)["global_step"] > 0


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.is_mount():
        path = path.parent
    return path


def test_a_full_disk_is_one_line_naming_the_file_system(tmp_path):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, last)
    with pytest.raises(DiskFullError) as e:
        DiskFullAt(1).save_checkpoint({"step": 2}, last)
    message = str(e.value)
    assert message.startswith(
        f"{last}: No space left on device on the file system mounted at {mount_point(last)} ("
    )
    assert (
        message.endswith(f"make room, then run the same command with ckpt_path={last}")
        and "\n" not in message
    )
    # the last whole checkpoint stays; the abandoned write's bytes are gone
    assert torch.load(last, weights_only=True)["step"] == 1 and os.listdir(tmp_path) == ["last.ckpt"]


# 2 epochs of the tiny set: writes 1 and 2 are epoch 1's best and last.ckpt, write 3 is epoch 2's first
FULL_AT_3 = "trainer.plugins=[{_target_: tests.kill_points.DiskFullAt, nth: 3}]"
TWO_EPOCHS = [*FLAT, "trainer.max_epochs=2", "seed=0"]


def test_a_full_disk_stops_the_run_and_the_same_command_resumes(tmp_path, tiny_root):
    with pytest.raises(DiskFullError, match="make room, then run the same command with ckpt_path="):
        run(compose_cfg(tmp_path / "a", tiny_root, [*TWO_EPOCHS, FULL_AT_3]))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = run(compose_cfg(tmp_path / "b", tiny_root, [*TWO_EPOCHS, f"ckpt_path={last}"]))
    assert resumed["epochs_run"] == 2 and resumed["global_steps"] == 2 * 16


@pytest.mark.slow
def test_a_full_disk_cli_is_one_error_line(tmp_path, tiny_root):
    args = [f"data.root={tiny_root}", *TINY, *TWO_EPOCHS, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_script("train.py", *args, FULL_AT_3, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device on the file system mounted at" in lines[0], lines
