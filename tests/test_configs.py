"""Every config option composes and instantiates (the real conf/, forced tiny)."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from fmnist_lit.cli import CONF_DIR
from fmnist_lit.components import build_callbacks, build_loggers
from fmnist_lit.utils import UserError
from tests.helpers import compose_cfg

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
    # MLflow opens its store when built: one in tmp_path, not the checkout's
    if "logger=mlflow" in overrides:
        overrides = [*overrides, f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
    cfg = compose_cfg(tmp_path, tiny_root, overrides)
    assert isinstance(instantiate(cfg.data), L.LightningDataModule)
    model = instantiate(cfg.model)
    assert isinstance(model, L.LightningModule)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    for cb in build_callbacks(cfg):
        assert isinstance(cb, L.Callback)
    build_loggers(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        # Lightning's ValueError
        ("callbacks.ema.decay=1.5", r"^callbacks\.ema: Invalid decay value 1\.5"),
        ("callbacks.model_checkpoint.mode=maxx", r"^callbacks\.model_checkpoint: `mode` can be min, max"),
    ],
)
def test_a_callback_refusing_a_value_is_a_user_error(tmp_path, tiny_root, override, message):
    # Hydra wraps the callback's exception: train.py's `error:` line names the callback
    cfg = compose_cfg(tmp_path, tiny_root, ["experiment=resnet", override])
    with pytest.raises(UserError, match=message):
        build_callbacks(cfg)


def test_gpu_trainer_composes(tmp_path, tiny_root):
    """Cannot run without a GPU; it must still compose."""
    assert compose_cfg(tmp_path, tiny_root, ["trainer=gpu"]).trainer.accelerator == "gpu"


def test_seed_experiments_match_the_seeds(tmp_path, tiny_root):
    c0 = compose_cfg(tmp_path, tiny_root, ["experiment=simple_cnn_early_stopping"], tiny=False)
    assert c0.trainer.max_epochs == 150 and c0.callbacks.early_stopping.monitor == "val/loss"
    assert c0.optimizer._target_ == "torch.optim.Adam" and c0.scheduler is None
    c3 = compose_cfg(tmp_path, tiny_root, ["experiment=simple_cnn_adam"], tiny=False)
    assert c3.model.net._target_.endswith("SimpleCNN") and list(c3.model.net.widths) == [32, 64, 128]
    assert c3.model.label_smoothing == 0.0 and c3.data.batch_size == 256
    c4 = compose_cfg(tmp_path, tiny_root, ["experiment=bn_gap"], tiny=False)
    assert c4.model.net._target_.endswith("BNGapCNN") and list(c4.model.net.widths) == [64, 128, 256]


@pytest.mark.parametrize(
    "alias, name",
    [("seed000", "simple_cnn_early_stopping"), ("seed003", "simple_cnn_adam"), ("seed004", "bn_gap")],
)
def test_seed_aliases_compose_to_the_named_experiment(tmp_path, tiny_root, alias, name):
    assert compose_cfg(tmp_path, tiny_root, [f"experiment={alias}"]) == compose_cfg(
        tmp_path, tiny_root, [f"experiment={name}"]
    )


def test_model_options_choose_only_the_net(tmp_path, tiny_root):
    """LightningModule settings are written once (conf/train.yaml); conf/model/*.yaml holds only a net."""
    for name in options("model"):
        cfg = compose_cfg(tmp_path, tiny_root, [f"model={name}"])
        assert set(cfg.model) == {
            "_target_",
            "net",
            "optimizer",
            "scheduler",
            "label_smoothing",
            "compile",
            "channels_last",
            "tta_flip",
            "tta_shift",
            "bias_lr_mult",
        }, name
        assert cfg.model.net._target_.startswith("fmnist_lit.models."), name
