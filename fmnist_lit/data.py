"""Fashion-MNIST as a LightningDataModule: the official splits (fmnist_lit/fashion_mnist.py finds and checks the
files), validation carved from the 60k training images.

Fast path (default): each split is one uint8 tensor in memory, batches are index slices, and scaling,
normalisation and augmentation happen per batch on the device (`on_after_batch_transfer`, with fmnist_lit.batches).
On a GPU the uint8 tensors themselves go to the device once (`keep_on_device`), so a step copies nothing from the
host.
`in_memory=false` keeps torchvision's per-image PIL/ToTensor path for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fmnist_lit.batches import MEAN, STD, TensorBatches, augment, normalize_uint8
from fmnist_lit.csv_data import read_csv
from fmnist_lit.fashion_mnist import DatasetError, load_split, prepare_raw


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
