"""Run and sweep folders, made and claimed by cli.CheckBeforeWriting before Hydra writes into them: two processes
never share one, and a folder that cannot be made (its parent not writable, a file where a folder should be, a
read-only or full disk) is one `error:` line naming it.

A folder is claimed by creating a marker in it exclusively (mkdir, open with O_EXCL: atomic, on NFS too), so of
processes started together exactly one gets it: `.hydra/` in a run folder (Hydra's record of the run, which Hydra
then fills), `multirun.yaml` in a sweep folder (Hydra's record of the sweep; written here first, with the same
config). A name from conf/ (`outputs/<date>/<time>`, to the second) that another run holds gives way to the next
free one, `<time>-1`, `<time>-2`, ...; a taken name typed on the command line is refused instead.

Not claimed: the folder of a DDP process of rank > 0 (it writes into the one its rank 0 claimed) and that of a
sweep's job run in a child process (fmnist_lit/sweep.py: the sweep claimed it).
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fmnist_lit.utils import UserError

# set for a sweep job's child process (fmnist_lit/sweep.py): it records its own failure (error.txt)
SWEEP_JOB_ENV = "FMNIST_LIT_SWEEP_JOB"

# what to do about the errors os.mkdir gives for a folder the user named
FIXES = {
    errno.EACCES: "the folder above it must be writable by you",
    errno.EPERM: "the folder above it must be writable by you",
    errno.EROFS: "it is on a read-only file system",
    errno.ENOSPC: "the file system is full",
    errno.ENOTDIR: "a file stands where a folder of its path should be",
    errno.EEXIST: "a file of that name exists",
}
# the ranks of a DDP process, as Lightning's re-launch (LOCAL_RANK), a multi-node launch (NODE_RANK), torchrun
# (RANK) and SLURM (SLURM_PROCID) set them
RANK_ENV = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
SWEEP_MARKER = "multirun.yaml"


def folder_error(key: str, folder: Path, e: OSError) -> UserError:
    """One line for an OSError met making `folder` (set by the config key `key`)."""
    fix = FIXES.get(e.errno, "choose another folder")
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(folder) else ""
    return UserError(
        f"{key}={folder}: cannot create it: {e.strerror or e}{where}; {fix}; choose another {key}"
    )


def make_folder(key: str, folder: Path) -> None:
    """`folder` and its missing parents, or a UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise folder_error(key, folder, e) from None


def _rank_above_zero() -> str | None:
    """The first rank > 0 in this process's environment, as a name (`node_rank_1`, `rank_3`); None on rank 0."""
    for key in RANK_ENV:
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return f"{key.lower()}_{value}"
    return None


def joins_another_process() -> bool:
    """True in a process that writes into a folder another process claimed (see the module docstring)."""
    return SWEEP_JOB_ENV in os.environ or _rank_above_zero() is not None


def join(config: DictConfig) -> None:
    """Set a process that joins its rank 0's run folder up as Lightning sets up the ranks it starts: no `.hydra/` of
    its own (rank 0's is the run's record, and claims the folder) and a log file of its own
    (`train_node_rank_1.log`)."""
    if config.hydra.output_subdir is None:
        # started by Lightning or by a sweep, set up so already
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = None
        config.hydra.job.name = f"{config.hydra.job.name}_{_rank_above_zero() or 'joined'}"


def typed(config: DictConfig, key: str) -> bool:
    """True if `key` was set on the command line (a Hydra override such as `hydra.run.dir=...`)."""
    return any(o.lstrip("+~").partition("=")[0] == key for o in config.hydra.overrides.hydra)


def candidates(folder: Path, rename: bool) -> Iterator[Path]:
    """The names a run may take: `folder`; with `rename`, the first of folder, folder-1, folder-2, ... that does not
    exist, then the next ones, for a run that loses the race for it."""
    if not rename:
        yield folder
        return
    for n in itertools.count():
        name = folder.with_name(f"{folder.name}-{n}") if n else folder
        if not name.exists():
            yield name


def claim(
    key: str, folder: Path, rename: bool, marker: str, content: str | None, check: Callable[[Path], None]
) -> Path:
    """The folder this process claimed: `folder` or, with `rename`, the next free name. `check(first name)` runs
    before anything is made; the marker is a folder (`content` None) or a file holding `content`. A UserError if
    the folder is the user's and another process holds it, or it cannot be made."""
    names = candidates(folder, rename)
    first = next(names)
    check(first)
    for name in itertools.chain([first], names):
        make_folder(key, name)
        try:
            if content is None:
                (name / marker).mkdir()
            else:
                with (name / marker).open("x") as f:
                    f.write(content)
            return name
        except FileExistsError:
            if not rename:
                raise UserError(
                    f"{key}={folder} is another run's (it holds {marker}): choose a new {key}"
                ) from None
        except OSError as e:
            raise folder_error(key, name, e) from None
    raise AssertionError("unreachable: the names go on")


def set_hydra_dir(config: DictConfig, key: str, folder: Path) -> None:
    """Point Hydra at the claimed folder. A run's job reads `hydra.run.dir` from this config; a sweep's jobs are
    composed again from the command line's hydra overrides, so the sweep folder goes there too."""
    with read_write(config.hydra), open_dict(config.hydra):
        OmegaConf.update(config, key, str(folder))
        if key == "hydra.sweep.dir":
            quoted = str(folder).replace("\\", "\\\\").replace("'", "\\'")
            config.hydra.overrides.hydra.append(f"{key}='{quoted}'")


def release_unused_sweep(sweep: Path, made: bool) -> None:
    """At exit: a sweep that started no job (a key only a job's composition rejects, Ctrl-C) leaves nothing, so the
    same folder can be used again."""
    if not sweep.is_dir() or [p.name for p in sweep.iterdir()] != [SWEEP_MARKER]:
        return
    (sweep / SWEEP_MARKER).unlink()
    if made:
        sweep.rmdir()
