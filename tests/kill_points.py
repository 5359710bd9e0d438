"""Test-only faults a train.py subprocess injects into itself at an exact point, SIGKILL or a full disk, added
through the config: `+callbacks.kill={_target_: tests.kill_points.KillAt, ...}` or
`trainer.plugins=[{_target_: tests.kill_points.KillDuringWrite, ...}]`. A process that kills itself is as dead as
one killed from outside, and the point is the same on every run."""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

import lightning as L
import torch

from fmnist_lit.resume import AtomicCheckpointIO


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(L.Callback):
    """SIGKILL after optimiser step `step` (before a checkpoint due at that step: Lightning runs checkpoint
    callbacks last), or at the start of epoch `epoch_start` (after the previous epoch's end checkpoint), or during
    epoch `validating`'s validation."""

    def __init__(
        self, step: int | None = None, epoch_start: int | None = None, validating: int | None = None
    ):
        self.step, self.epoch_start, self.validating = step, epoch_start, validating

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            _die()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == self.epoch_start:
            _die()

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.validating:
            _die()


class FailDuringWrite(AtomicCheckpointIO):
    """The `nth` checkpoint write (1-based) goes to `fail` instead of being written."""

    def __init__(self, nth: int):
        super().__init__()
        self.nth, self.writes = nth, 0

    def _dump(self, checkpoint: dict[str, Any], f: Any) -> None:
        self.writes += 1
        if self.writes != self.nth:
            return super()._dump(checkpoint, f)
        self.fail(checkpoint, f)

    def fail(self, checkpoint: dict[str, Any], f: Any) -> None:
        raise NotImplementedError


class KillDuringWrite(FailDuringWrite):
    """The `nth` checkpoint write stops half-way through its bytes: SIGKILL with a partial file on disk."""

    def fail(self, checkpoint: dict[str, Any], f: Any) -> None:
        torch.save(checkpoint, f)
        f.truncate(f.tell() // 2)
        f.flush()
        os.fsync(f.fileno())
        _die()


class DiskFullAt(FailDuringWrite):
    """The `nth` checkpoint write (1-based) finds the disk full half-way through its bytes."""

    def fail(self, checkpoint: dict[str, Any], f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
