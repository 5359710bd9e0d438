"""logger=wandb (the [wandb] extra): offline by default, the run written into the run folder for `wandb sync`."""

import pytest

from fmnist_lit.train import run
from tests.helpers import compose_cfg


@pytest.mark.slow
def test_offline_run_in_the_run_folder(tmp_path, tiny_root, monkeypatch):
    wandb = pytest.importorskip("wandb")
    # W&B's settings and cache go to the home folder otherwise
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    metrics = run(compose_cfg(out, tiny_root, ["model=mlp", "logger=wandb"]))
    summary = dict(wandb.run.summary)
    # Lightning leaves the run open until the process ends
    wandb.finish()
    assert summary["test/acc"] == pytest.approx(metrics["test_acc"])
    assert len(list(out.glob("wandb/offline-run-*/run-*.wandb"))) == 1
