"""Every config option composes and instantiates (the real conf/, forced tiny)."""

from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from fmnist_lit.train import CONF_DIR, build_callbacks, build_loggers
from tests.conftest import compose_cfg

CONF = Path(CONF_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


COMBOS = (
    [[f"model={m}"] for m in options("model")]
    + [[f"experiment={e}"] for e in options("experiment")]
    + [[f"debug={d}"] for d in options("debug")]
    + [[f"trainer={t}"] for t in options("trainer") if t not in ("gpu", "ddp")]
    + [[f"logger={g}"] for g in options("logger")]
    + [[f"callbacks={c}"] for c in options("callbacks")]
)


@pytest.mark.parametrize("overrides", COMBOS, ids=lambda o: " ".join(o))
def test_config_instantiates(tmp_path, tiny_root, overrides):
    cfg = compose_cfg(tmp_path, tiny_root, overrides)
    assert isinstance(instantiate(cfg.data), L.LightningDataModule)
    model = instantiate(cfg.model)
    assert isinstance(model, L.LightningModule)
    model.configure_optimizers  # noqa: B018 - attribute exists
    for cb in build_callbacks(cfg):
        assert isinstance(cb, L.Callback)
    build_loggers(cfg)


def test_gpu_trainer_composes(tmp_path, tiny_root):
    """Cannot run without a GPU; it must still compose."""
    assert compose_cfg(tmp_path, tiny_root, ["trainer=gpu"]).trainer.accelerator == "gpu"


def test_csv_data_config(tmp_path, tiny_root):
    cfg = compose_cfg(tmp_path, tiny_root, ["data=csv", "data.train_csv=a.csv", "data.test_csv=b.csv"])
    dm = instantiate(cfg.data)
    assert dm.hparams.train_csv == "a.csv"


def test_seed_experiments_match_the_seeds(tmp_path, tiny_root):
    c0 = compose_cfg(tmp_path, tiny_root, ["experiment=seed000"], tiny=False)
    assert c0.trainer.max_epochs == 150 and c0.callbacks.early_stopping.monitor == "val/loss"
    c3 = compose_cfg(tmp_path, tiny_root, ["experiment=seed003"], tiny=False)
    assert c3.model.net._target_.endswith("SimpleCNN") and list(c3.model.net.widths) == [32, 64, 128]
    c4 = compose_cfg(tmp_path, tiny_root, ["experiment=seed004"], tiny=False)
    assert c4.model.net._target_.endswith("BNGapCNN") and list(c4.model.net.widths) == [64, 128, 256]
