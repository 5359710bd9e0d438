"""Shared fixtures: tiny synthetic IDX datasets (no network) and the real config composed tiny."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fmnist_lit.train import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake data: class k is noise plus a bright 6x6 square at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    x = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(10):
        r, c = 2 + (k // 5) * 14, 2 + (k % 5) * 5
        x[y == k, r:r + 6, c:c + 6] = 255
    return x, y


def write_idx(raw: Path, split: str, x: torch.Tensor, y: torch.Tensor) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    n = len(x)
    (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + x.numpy().tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + y.to(torch.uint8).numpy().tobytes())


def write_tiny_root(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """A data root holding a synthetic Fashion-MNIST in torchvision's layout."""
    raw = root / "FashionMNIST" / "raw"
    write_idx(raw, "train", *make_images(n_train, 0))
    write_idx(raw, "t10k", *make_images(n_test, 1))
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_root(tmp_path_factory.mktemp("tiny_data"))


TINY = [
    "data.val_size=100", "data.batch_size=32", "data.eval_batch_size=100", "data.check_md5=false",
    "data.download=false", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0",
    "callbacks.progress_bar=null", "callbacks.model_summary=null", "threads=1",
]


def compose_cfg(tmp_path: Path, root: Path, overrides: list[str] = (), tiny: bool = True) -> DictConfig:
    """The real conf/train.yaml, forced tiny (unless `tiny=False`), with outputs in tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={root}", *(TINY if tiny else []), *overrides], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)  # compose does not set it; ${hydra:...} needs it
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def cfg_tiny(tmp_path, tiny_root) -> DictConfig:
    return compose_cfg(tmp_path, tiny_root)
