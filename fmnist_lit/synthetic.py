"""A tiny, learnable stand-in for Fashion-MNIST in torchvision's IDX layout: for tests and smoke runs, no network.

python -m fmnist_lit.synthetic --root /tmp/fake   # then: python train.py data.root=/tmp/fake data.check_md5=false
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import torch


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 28, 28) uint8 images and (n,) int64 labels: class k is noise plus a bright 6x6 square at a
    class-specific place."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    x = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(10):
        r, c = 2 + (k // 5) * 14, 2 + (k % 5) * 5
        x[y == k, r : r + 6, c : c + 6] = 255
    return x, y


def write_idx(raw: Path, split: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """`<split>-images-idx3-ubyte` and `<split>-labels-idx1-ubyte` in `raw` (split: "train" or "t10k")."""
    raw.mkdir(parents=True, exist_ok=True)
    n = len(x)
    (raw / f"{split}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + x.numpy().tobytes()
    )
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + y.to(torch.uint8).numpy().tobytes()
    )


def write_tiny_root(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """A data root holding a synthetic Fashion-MNIST in torchvision's layout (`root/FashionMNIST/raw/`)."""
    raw = Path(root) / "FashionMNIST" / "raw"
    write_idx(raw, "train", *make_images(n_train, 0))
    write_idx(raw, "t10k", *make_images(n_test, 1))
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a tiny synthetic Fashion-MNIST (IDX files) under ROOT.")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--train", type=int, default=600, help="training images (validation is carved from them)")
    p.add_argument("--test", type=int, default=200, help="test images")
    a = p.parse_args(argv)
    # never overwrite data someone made
    if (a.root / "FashionMNIST" / "raw").exists():
        p.error(f"{a.root / 'FashionMNIST' / 'raw'} already exists: choose another --root")
    write_tiny_root(a.root, a.train, a.test)
    print(f"synthetic Fashion-MNIST ({a.train} train, {a.test} test) in {a.root / 'FashionMNIST' / 'raw'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
