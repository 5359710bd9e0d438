"""The Fashion-MNIST files: class names, the official IDX files and their md5s, where they come from, and the checks
every file passes before a single batch is made.

Sources, in order: raw IDX files already under `root/FashionMNIST/raw/`; the Debian/Ubuntu package
`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/*.gz`, decompressed into `root`); torchvision's
download. Every uncompressed file is checked (IDX header, size, labels in 0..9, md5).

`python -m fmnist_lit.fashion_mnist --root data` makes the data available and verifies it (`make data`).
"""

from __future__ import annotations

import argparse
import errno
import gzip
import hashlib
import logging
import shutil
import struct
import sys
from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST

from fmnist_lit.utils import UserError

CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
log = logging.getLogger(__name__)
# data folders whose origin this process has logged (prepare_data and every setup stage come here)
_SAID: set[Path] = set()
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# md5 of the *uncompressed* official files (the Debian .gz files are recompressed, so their md5s differ).
MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
N_OFFICIAL = {"train": 60_000, "t10k": 10_000}


class DatasetError(UserError):
    """The data on disk is missing, truncated or not the official Fashion-MNIST."""


def _fixes(root: Path) -> str:
    return (
        f"Fix: install the system copy (`sudo apt-get install dataset-fashion-mnist`, then rerun), "
        f"or allow torchvision's download (`data.download=true`, needs internet), "
        f"or delete {root / 'FashionMNIST' / 'raw'} to fetch it again."
    )


def _check_idx(path: Path) -> int:
    """Validate an IDX header against the file size; return the number of items."""
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    data = path.read_bytes()[:16]
    images = "images" in path.name
    magic, want_header = (2051, 16) if images else (2049, 8)
    if len(data) < want_header or struct.unpack(">I", data[:4])[0] != magic:
        raise DatasetError(f"{path}: not an IDX {'image' if images else 'label'} file (bad header)")
    n = struct.unpack(">I", data[4:8])[0]
    rows, cols = struct.unpack(">II", data[8:16]) if images else (1, 1)
    want = want_header + n * rows * cols
    size = path.stat().st_size
    if size != want:
        raise DatasetError(f"{path}: truncated or padded, {size} bytes where the header implies {want}")
    if images and (rows, cols) != (28, 28):
        raise DatasetError(f"{path}: images are {rows}x{cols}, expected 28x28")
    return n


def _check_labels(path: Path) -> None:
    """Every label a class index 0..9 (the md5 vouches for the official files only; custom data is read too)."""
    # (N,) uint8 after the 8-byte header; N is at most 60k for Fashion-MNIST-sized files
    labels = torch.frombuffer(bytearray(path.read_bytes()[8:]), dtype=torch.uint8)
    bad = (labels > len(CLASSES) - 1).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{path}: label {int(labels[i])} at item {i} is outside 0..{len(CLASSES) - 1} "
            f"({len(bad)} labels out of range)"
        )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_raw(raw: Path, check_md5: bool = True) -> None:
    """Raise DatasetError naming the first file that is missing, truncated or corrupted."""
    counts = {}
    for name, md5 in MD5.items():
        path = raw / name
        counts[name] = _check_idx(path)
        if "labels" in name:
            _check_labels(path)
        if check_md5 and _md5(path) != md5:
            raise DatasetError(f"{path}: md5 mismatch (corrupted or not the official Fashion-MNIST file)")
    for split in ("train", "t10k"):
        n_img, n_lab = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise DatasetError(f"{raw}: {split} has {n_img} images but {n_lab} labels")
        if check_md5 and n_img != N_OFFICIAL[split]:
            raise DatasetError(f"{raw}: {split} has {n_img} items, the official set has {N_OFFICIAL[split]}")


def _os_error(root: Path, e: OSError) -> str:
    """One line for a file-system error under data.root: where, what the OS said, what to do."""
    fix = {
        errno.ENOSPC: "free some disk space, or set data.root to a folder on a disk with ~60 MB free",
        errno.ENOTDIR: "data.root must be a folder",
        errno.EISDIR: "this must be a file, not a folder",
        errno.EACCES: "data.root must be a folder you can read (and write, to decompress the system copy)",
        errno.EPERM: "data.root must be a folder you can read (and write, to decompress the system copy)",
        errno.EROFS: "data.root is on a read-only file system: set data.root to a writable folder",
    }
    where = e.filename or root
    return f"data.root={root}: {where}: {e.strerror or e}; {fix.get(e.errno, 'check data.root')}"


def prepare_raw(root: str | Path, download: bool = True, check_md5: bool = True) -> Path:
    """Make `root/FashionMNIST/raw/` hold the four verified IDX files; return that folder."""
    root = Path(root)
    try:
        return _prepare_raw(root, download, check_md5)
    except OSError as e:
        # a file for a folder, no permission, a full disk: one line, not a traceback
        raise DatasetError(_os_error(root, e)) from None


def _prepare_raw(root: Path, download: bool, check_md5: bool) -> Path:
    raw = root / "FashionMNIST" / "raw"
    missing = [n for n in MD5 if not (raw / n).exists()]
    # where the data comes from, said once per run (a mistyped data.root is filled with a fresh copy: say where)
    source = "the files already there"
    if missing:
        if all((SYSTEM_DIR / f"{n}.gz").exists() for n in MD5):
            source = f"a copy of {SYSTEM_DIR} (Debian's dataset-fashion-mnist), made now"
            raw.mkdir(parents=True, exist_ok=True)
            for n in MD5:
                if not (raw / n).exists():
                    # write then rename: an interrupted copy never looks complete
                    tmp = raw / f"{n}.part"
                    try:
                        with gzip.open(SYSTEM_DIR / f"{n}.gz", "rb") as src, tmp.open("wb") as dst:
                            shutil.copyfileobj(src, dst)
                    except BaseException:
                        # a full disk or Ctrl-C: leave no partial file behind
                        tmp.unlink(missing_ok=True)
                        raise
                    tmp.rename(raw / n)
        elif download:
            source = "torchvision's download, made now"
            try:
                FashionMNIST(str(root), train=True, download=True)
                FashionMNIST(str(root), train=False, download=True)
            except Exception as e:
                # network errors come in many types; all mean the same to the user
                raise DatasetError(
                    f"Fashion-MNIST files missing under {raw} ({', '.join(missing)}) and the download "
                    f"failed ({e}). " + _fixes(root)
                ) from e
        else:
            raise DatasetError(
                f"Fashion-MNIST files missing under {raw} ({', '.join(missing)}), no system copy in "
                f"{SYSTEM_DIR}, and data.download=false. " + _fixes(root)
            )
    try:
        verify_raw(raw, check_md5)
    except DatasetError as e:
        raise DatasetError(f"{e}. " + _fixes(root)) from None
    if raw.resolve() not in _SAID:
        _SAID.add(raw.resolve())
        log.info("data: %s, from %s", raw.resolve(), source)
    return raw


def load_split(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 28, 28) uint8 images and (N,) int64 labels, parsed by torchvision."""
    ds = FashionMNIST(str(root), train=train, download=False)
    return ds.data, ds.targets.long()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Make Fashion-MNIST available under ROOT and verify it.")
    p.add_argument("--root", default="data")
    p.add_argument("--no-download", action="store_true", help="fail instead of trying torchvision's download")
    a = p.parse_args(argv)
    # imported here: the package's data path stays free of Hydra
    from fmnist_lit.cli import fail

    try:
        raw = prepare_raw(a.root, download=not a.no_download)
    except DatasetError as e:
        fail(str(e))
    print(f"Fashion-MNIST ready and verified (md5) in {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
