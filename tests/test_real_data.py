"""The real Fashion-MNIST (Debian's copy, installed by `make test`): integrity and a short real run."""

import os

import pytest

from fmnist_lit import fashion_mnist as D
from fmnist_lit.batches import MEAN, STD
from fmnist_lit.train import run
from tests.helpers import ROOT, compose_cfg

HAVE_SYSTEM_COPY = all((D.SYSTEM_DIR / f"{n}.gz").exists() for n in D.MD5)
HAVE_LOCAL = all((ROOT / "data" / "FashionMNIST" / "raw" / n).exists() for n in D.MD5)


@pytest.fixture(scope="module")
def real_root():
    if not (HAVE_SYSTEM_COPY or HAVE_LOCAL):
        if os.environ.get("CI"):
            pytest.fail("CI must have the real data: `make test` installs dataset-fashion-mnist")
        pytest.skip("real Fashion-MNIST not available (apt-get install dataset-fashion-mnist)")
    return D.prepare_raw(ROOT / "data", download=False).parent.parent


def test_real_files_are_official(real_root):
    D.verify_raw(real_root / "FashionMNIST" / "raw", check_md5=True)
    x, y = D.load_split(real_root, train=True)
    assert x.shape == (60_000, 28, 28) and y.bincount().tolist() == [6000] * 10
    x, y = D.load_split(real_root, train=False)
    assert x.shape == (10_000, 28, 28) and y.bincount().tolist() == [1000] * 10


def test_train_mean_std_constants(real_root):
    x, _ = D.load_split(real_root, train=True)
    xf = x.float() / 255
    assert abs(xf.mean().item() - MEAN) < 5e-4 and abs(xf.std().item() - STD) < 5e-4


def test_short_real_run_beats_chance(tmp_path, real_root):
    """~150 steps of simple_cnn on real data, tested on the full official 10k test set."""
    cfg = compose_cfg(
        tmp_path,
        real_root,
        [
            "model=simple_cnn",
            "data.check_md5=true",
            "data.batch_size=128",
            "data.val_size=5000",
            "data.eval_batch_size=1000",
            "trainer.limit_train_batches=150",
            "logger=csv",
        ],
    )
    m = run(cfg)
    assert sum(map(sum, m["confusion_matrix"])) == 10_000
    # chance is 0.10
    assert m["test_acc"] > 0.70, m["test_acc"]
