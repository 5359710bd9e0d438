"""Writing checkpoints during training (reading one back into a model is fmnist_lit/checkpoint.py): their names,
and what makes `last.ckpt` an exact resume point: kill -9 at any moment, resume with `ckpt_path=.../last.ckpt`, and
the run ends with the same weights as one that was never interrupted (same machine).

- Checkpoint (callbacks=every_epoch): Lightning's ModelCheckpoint with `{epoch}` in file names counted from 1.
- AtomicCheckpointIO (trainer.plugins): a checkpoint goes to a temporary file in its own folder, is fsynced and
  renamed over its name, so `last.ckpt` is always a whole checkpoint, the previous or the new one. Ctrl-C during
  the write is held until the file is whole (torch.save interrupted mid-zip raises a RuntimeError instead of the
  KeyboardInterrupt, a traceback instead of the resume hint). Every checkpoint Lightning reads (the resume, the
  best one to test) is read with `weights_only=True`. The writer holds a lock (flock) on its temporary file, so a
  temporary file nobody holds is what a killed write left: reading a checkpoint (a resume) removes those beside it.
- ResumableCheckpoint (callbacks.model_checkpoint): that Checkpoint, plus last.ckpt every
  `save_last_every_n_steps` optimiser steps and at every epoch end (Lightning writes it only with a new best),
  the RNG states (torch, CUDA, numpy, python) saved with it and restored when training starts, and the record
  of the best checkpoints kept when a run resumes into a new folder (Lightning keeps only the path, so a worse
  epoch would become "best").

The rest is Lightning's: model, optimiser, scheduler and loop progress, other callbacks' state (EarlyStopping,
WeightAveraging/EMA), and the train loader's own state (order and position, fmnist_lit.batches.TensorBatches).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fmnist_lit.utils import UserError

log = logging.getLogger(__name__)
# `.<checkpoint name>.tmp`: beside the checkpoint, so that the rename cannot cross file systems
TMP_SUFFIX = ".tmp"
# the errors of a file system that has no room left for the checkpoint
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(UserError):
    """A checkpoint did not fit on its file system: one error line, and how to go on once there is room."""


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and raise it as KeyboardInterrupt when the block ends
    normally. Only where Python's own handler is installed, in the main thread (signals are handled there)."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _open_locked(tmp: Path) -> Any:
    """`tmp` truncated and opened for writing, under an exclusive lock held until it is closed. Opened again if a
    `remove_leftovers` unlinked it between the open and the lock."""
    while True:
        f = tmp.open("wb")
        fcntl.flock(f, fcntl.LOCK_EX)
        if _same_file(f.fileno(), tmp):
            return f
        f.close()


def remove_leftovers(folder: Path) -> None:
    """Remove the temporary files of checkpoint writes that died (kill -9, power loss) from `folder`: those no
    process holds the lock of. A write in progress (another run resumed from this one's checkpoint) is left."""
    for tmp in folder.glob(f".*.ckpt{TMP_SUFFIX}"):
        try:
            # without O_CREAT: a file renamed away meanwhile is not made again
            fd = os.open(tmp, os.O_WRONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the name may hold a newer write's file by now: only the file locked here is removed
            if _same_file(fd, tmp):
                tmp.unlink()
                log.info("removed %s, left by a checkpoint write that did not finish", tmp)
        except OSError:
            # BlockingIOError: a write in progress; other errors: an unwritable folder, left as it is
            pass
        finally:
            os.close(fd)


def _disk_full(e: BaseException) -> OSError | None:
    """The no-room OSError behind `e`, if any (torch.save may report it from inside its zip writer)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def disk_full_error(path: Path, e: OSError) -> DiskFullError:
    """One line naming the file system that is full, the checkpoint left whole and the command that goes on."""
    mount = _mount_point(path.parent)
    free_mb = shutil.disk_usage(mount).free / 2**20
    last = path.with_name("last.ckpt")
    then = (
        f"{last} is the last whole checkpoint: make room, then run the same command with ckpt_path={last}"
        if last.is_file()
        else "no checkpoint was written before it: make room and run again"
    )
    return DiskFullError(
        f"{path}: {e.strerror} on the file system mounted at {mount} ({free_mb:.0f} MB free); the write was "
        f"abandoned; {then}"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written all-or-nothing and read weights-only."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
        with ctrl_c_held():
            with _open_locked(tmp) as f:
                try:
                    self._dump(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                    # renamed under the lock: an unlocked temporary file is always a leftover
                    os.replace(tmp, path)
                except Exception as e:
                    # a failed write leaves nothing behind (on a full disk: its space comes back)
                    tmp.unlink(missing_ok=True)
                    full = _disk_full(e)
                    if full is not None:
                        raise disk_full_error(path, full) from e
                    raise
            # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _dump(self, checkpoint: dict[str, Any], f: Any) -> None:
        torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        remove_leftovers(Path(path).parent)
        # explicit True: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD overrides only calls that leave weights_only unset
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def rng_states() -> dict[str, Any]:
    """Every global RNG a training step may draw from (augmentation, dropout), as plain data (weights_only)."""
    # ('MT19937', uint32 (624,), pos, has_gauss, cached_gaussian)
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint whose `{epoch}` in file names counts from 1, like the console, the report and metrics.json
    (Lightning's counts from 0): `epoch002-...ckpt` holds the weights after the second epoch."""

    def format_checkpoint_name(
        self,
        metrics: dict[str, Any],
        filename: str | None = None,
        ver: int | None = None,
        prefix: str | None = None,
    ) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)


class ResumableCheckpoint(Checkpoint):
    """ModelCheckpoint whose last.ckpt is always recent and resumes exactly (see the module docstring).

    save_last_every_n_steps: also write last.ckpt every this many optimiser steps inside an epoch (0: only at
    epoch ends); a kill loses at most this many steps.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(save_last_every_n_steps, int) or save_last_every_n_steps < 0:
            raise ValueError(f"save_last_every_n_steps={save_last_every_n_steps}: must be an integer >= 0")
        self.save_last_every_n_steps = save_last_every_n_steps
        self._rng_to_restore: dict[str, Any] | None = None
        self._resumed_from: Path | None = None
        self._last_step_save = -1

    # -- when last.ckpt is written ---------------------------------------------------------------------------
    def _save_last_now(self, trainer: L.Trainer) -> None:
        # skipped when this step is saved already
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.save_last_every_n_steps
        step = trainer.global_step
        # the last batch of an epoch is saved at the epoch end; with gradient accumulation a step spans batches
        if (
            n
            and step % n == 0
            and step != self._last_step_save
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            saved_step = self._last_global_step_saved
            self._save_last_now(trainer)
            self._last_step_save = step
            # a validation right after this step must still save its best checkpoint (ModelCheckpoint skips every
            # save at a step it has saved at)
            self._last_global_step_saved = saved_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # no validation: the epoch end is the save point
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own on_train_end writes last.ckpt even under fast_dev_run, which promises no checkpoints
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    # -- what a checkpoint holds -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": rng_states()}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # called before load_state_dict: where the checkpoint being resumed lies
        self._resumed_from = Path(trainer.ckpt_path).resolve().parent if trainer.ckpt_path else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._rng_to_restore = state.pop("rng_states", None)
        if state.get("dirpath", self.dirpath) == self.dirpath:
            return super().load_state_dict(state)
        # Lightning's "won't be reloaded" notice: reloaded below after all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            super().load_state_dict(state)
        self._keep_best_of_resumed_run(state)

    def _keep_best_of_resumed_run(self, state: dict[str, Any]) -> None:
        """A run resumed into a new folder competes with the best checkpoints of the run it resumes (they stay in
        that folder, which is never written to). Only files beside the resumed checkpoint count."""
        old = {
            p: s
            for p, s in (state.get("best_k_models") or {}).items()
            if self._resumed_from is not None
            and Path(p).resolve().parent == self._resumed_from
            and Path(p).is_file()
        }
        better_first = sorted(old, key=old.get, reverse=self.mode == "max")
        if self.save_top_k > 0:
            better_first = better_first[: self.save_top_k]
        self.best_k_models = {p: old[p] for p in better_first}
        self.best_model_path = better_first[0] if better_first else ""
        self.best_model_score = old[better_first[0]] if better_first else None
        # full: the worst goes next
        if better_first and len(better_first) == self.save_top_k:
            self.kth_best_model_path, self.kth_value = better_first[-1], old[better_first[-1]]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # restored here, after the sanity check and every setup hook, right before the first training step: the
        # same point of the random streams as when the checkpoint was written
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
