"""Fashion-MNIST as a LightningDataModule.

Sources, in order: raw IDX files already under `root/FashionMNIST/raw/`; the Debian/Ubuntu package
`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/*.gz`, decompressed into `root`); torchvision's
download. Every uncompressed file is checked (IDX header, size, labels in 0..9, md5) before a single batch is
made.

Fast path (default): each split is one uint8 tensor in memory, batches are index slices, and scaling,
normalisation and augmentation happen per batch on the device (`on_after_batch_transfer`, with fmnist_lit.batches).
On a GPU the uint8 tensors themselves go to the device once (`keep_on_device`), so a step copies nothing from the
host.
`in_memory=false` keeps torchvision's per-image PIL/ToTensor path for comparison.
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
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from fmnist_lit.batches import MEAN, STD, TensorBatches, augment, normalize_uint8
from fmnist_lit.csv_data import read_csv
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


class _PILDataset(Dataset):
    """torchvision's classic per-image path: uint8 -> PIL -> ToTensor -> Normalize (the slow baseline)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.tf(transforms.functional.to_pil_image(self.x[i])), int(self.y[i])


class FashionMNISTDataModule(L.LightningDataModule):
    """The official splits, validation carved from the 60k training images by `split_seed`. Every setting comes
    from conf/data/fmnist.yaml (the one place with defaults); only the CSV files, which conf/data/csv.yaml adds,
    default to none."""

    def __init__(
        self,
        *,
        root: str,
        batch_size: int,
        eval_batch_size: int,
        val_size: int,
        split_seed: int,
        in_memory: bool,
        download: bool,
        check_md5: bool,
        num_workers: int,
        channels_last: bool,
        augment_pad: int,
        augment_flip: bool | str,
        keep_on_device: bool,
        augment_erase: float,
        test_each_epoch: bool,
        train_csv: str | None = None,
        test_csv: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = self.test_y = None
        self._raw: Path | None = None
        self._train_loader: TensorBatches | None = None
        # from a checkpoint, for the next train loader
        self._train_loader_state: dict[str, int] | None = None

    def prepare_data(self) -> None:
        # remembered so setup() does not hash the 55 MB again
        if self.hparams.train_csv is None:
            self._raw = prepare_raw(self.hparams.root, self.hparams.download, self.hparams.check_md5)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hp = self.hparams
        if hp.train_csv is not None:
            if hp.test_csv is None:
                raise DatasetError("data.train_csv is set but data.test_csv is not: give both CSV files")
            return (*read_csv(hp.train_csv), *read_csv(hp.test_csv))
        # prepare_data() runs on one process per node only (DDP): other processes verify here
        raw = self._raw or prepare_raw(hp.root, hp.download, hp.check_md5)
        return (*load_split(raw.parent.parent, True), *load_split(raw.parent.parent, False))

    def setup(self, stage: str | None = None) -> None:
        if self.train_x is not None:
            return
        x, y, self.test_x, self.test_y = self._load()
        n_val = self.hparams.val_size
        if not 0 <= n_val < len(x):
            raise DatasetError(
                f"data.val_size={n_val} must be in [0, {len(x) - 1}] (the training set has {len(x)})"
            )
        # The split depends only on split_seed, never on the run's seed or the machine: a CPU generator.
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        self.val_idx, self.train_idx = perm[:n_val], perm[n_val:]
        self.train_x, self.train_y = x[self.train_idx], y[self.train_idx]
        self.val_x, self.val_y = x[self.val_idx], y[self.val_idx]

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, x: torch.Tensor, y: torch.Tensor, train: bool, sharded: bool = True):
        bs = self.hparams.batch_size if train else self.hparams.eval_batch_size
        if not self.hparams.in_memory:
            return DataLoader(
                _PILDataset(x, y),
                batch_size=bs,
                shuffle=train,
                num_workers=self.hparams.num_workers,
                persistent_workers=self.hparams.num_workers > 0,
            )
        rank, world = self._rank() if sharded else (0, 1)
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.hparams.keep_on_device and device is not None and device.type != "cpu":
            # (N, 28, 28) uint8 on the GPU: 43 MB for the 55k training images; batches become device-side slices
            x, y = x.to(device), y.to(device)
        # Training order follows `seed` (seed_everything sets torch's initial seed) and the trainer's epoch; every
        # DDP rank draws the same permutation and takes a disjoint strided share of it.
        seed = torch.initial_seed() % 2**31 if train else 0
        epoch_fn = (lambda: self.trainer.current_epoch) if train and self.trainer is not None else None
        # `trainer.overfit_batches` (debug=overfit) means the same first batches every epoch: Lightning makes a
        # DataLoader's sampler sequential for it, but cannot reach this loader's own shuffling
        shuffle = train and not (self.trainer is not None and self.trainer.overfit_batches)
        return TensorBatches(
            x,
            y,
            bs,
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world,
            epoch_fn=epoch_fn,
            flip_alternate=train and self.hparams.augment_flip == "alternate",
        )

    def train_dataloader(self):
        loader = self._loader(self.train_x, self.train_y, train=True)
        if isinstance(loader, TensorBatches):
            self._train_loader = loader
            if self._train_loader_state is not None:
                loader.load_state_dict(self._train_loader_state)
                self._train_loader_state = None
        return loader

    # The train loader's order and position, in every checkpoint. Lightning restores the DataModule before it
    # asks for the train loader; its fit loop's own loader restore comes too late whenever the loader was built
    # early (a OneCycle schedule asks for `estimated_stepping_batches` while the optimisers are configured).
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_loader_state = state.get("train_loader")

    def val_dataloader(self):
        # no validation split: no validation loop (test_each_epoch rides on it)
        if len(self.val_x) == 0:
            return []
        loaders = [self._loader(self.val_x, self.val_y, train=False)]
        # a second validation dataloader: see LitClassifier's docstring
        if self.hparams.test_each_epoch:
            loaders.append(self._loader(self.test_x, self.test_y, train=False))
        return loaders

    def test_dataloader(self):
        return self._loader(self.test_x, self.test_y, train=False)

    def predict_dataloader(self):
        # the whole test set on every process: the report needs every prediction
        return self.eval_loader(self.test_x, self.test_y)

    def eval_loader(self, x: torch.Tensor, y: torch.Tensor):
        """uint8 images x (N, 28, 28) and labels y (N,) in their order, on every process (not sharded)."""
        return self._loader(x, y, train=False, sharded=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 (B, 28, 28) on the device -> normalised float (B, 1, 28, 28), augmented when training."""
        x, y = batch
        if x.dtype == torch.uint8:
            x = normalize_uint8(x)
        training = self.trainer is not None and self.trainer.training
        hp = self.hparams
        # "alternate" flips are made by the loader (TensorBatches), which knows each image's index
        flip = hp.augment_flip is True
        if training and (hp.augment_pad or flip or hp.augment_erase):
            x = augment(x, hp.augment_pad, flip, hp.augment_erase)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


class ImageSet(L.LightningDataModule):
    """Other images to predict than the test set (the validation split, corrupted test images), as a DataModule
    that only predicts: `trainer.predict(model, datamodule=ImageSet(dm, x, y))` runs on uint8 images x (N, 28, 28)
    with labels y (N,), through `dm`'s loader and per-batch normalisation, like its test set. Lightning applies a
    DataModule's `on_after_batch_transfer` only to the DataModule it predicts with, hence a DataModule here."""

    def __init__(self, source: FashionMNISTDataModule, x: torch.Tensor, y: torch.Tensor):
        super().__init__()
        self.source, self.x, self.y = source, x, y

    def predict_dataloader(self):
        return self.source.eval_loader(self.x, self.y)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.source.on_after_batch_transfer(batch, dataloader_idx)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Make Fashion-MNIST available under ROOT and verify it.")
    p.add_argument("--root", default="data")
    p.add_argument("--no-download", action="store_true", help="fail instead of trying torchvision's download")
    a = p.parse_args(argv)
    try:
        raw = prepare_raw(a.root, download=not a.no_download)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST ready and verified (md5) in {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
