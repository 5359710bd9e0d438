"""The folder a run writes into, made by cli.CheckBeforeWriting before Hydra makes it: a folder that cannot be
made (its parent not writable, a file where a folder should be, a read-only or full disk) is one `error:` line
naming the folder, before anything is written.
"""

from __future__ import annotations

import errno
from pathlib import Path

from fmnist_lit.utils import UserError

# what to do about the errors os.mkdir gives for a folder the user named
FIXES = {
    errno.EACCES: "the folder above it must be writable by you",
    errno.EPERM: "the folder above it must be writable by you",
    errno.EROFS: "it is on a read-only file system",
    errno.ENOSPC: "the file system is full",
    errno.ENOTDIR: "a file stands where a folder of its path should be",
    errno.EEXIST: "a file of that name exists",
}


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
