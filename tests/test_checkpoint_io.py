"""Checkpoint writes that do not finish: a killed write's temporary file is removed by the run that resumes."""

from __future__ import annotations

import fcntl

import torch

from fmnist_lit.resume import AtomicCheckpointIO
from fmnist_lit.train import run
from tests.conftest import compose_cfg

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
