"""Every registered model (every conf/model/*.yaml): shape, finiteness, gradients everywhere."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist_lit.cli import CONF_DIR

MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


def build_net(name: str) -> torch.nn.Module:
    return instantiate(OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml"))


def test_registry_has_the_seed_models():
    assert {"mlp", "simple_cnn", "bn_gap"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_backward(name, channels_last):
    torch.manual_seed(0)
    net = build_net(name).train()
    x = torch.randn(4, 1, 28, 28)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out = net(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(name):
    net = build_net(name).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(net(x), net(x))


def test_fast_cnn_layouts():
    from fmnist_lit.models import FastCNN

    # the textbook layout (pool_first=False, no extra convs): conv-BN-ReLU-pool per stage, then the linear head
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    old = {"head.2.weight": (10, 64 * 9), "head.2.bias": (10,)}
    for i, (c_in, c_out) in zip((0, 2, 4), ((1, 16), (16, 32), (32, 64))):
        old[f"features.{i}.0.weight"] = (c_out, c_in, 3, 3)
        old |= {f"features.{i}.1.{k}": () if k == "num_batches_tracked" else (c_out,) for k in bn}
    assert {
        k: tuple(v.shape)
        for k, v in FastCNN((16, 32, 64), dropout=0.0, pool_first=False).state_dict().items()
    } == old
    # any number of stages, extra optional
    assert FastCNN((8, 16), dropout=0.0, pool_first=False).features[-1].__class__ is torch.nn.MaxPool2d
    net = FastCNN((16, 32, 64), dropout=0.0, pool_first=True, extra=(0, 0, 1))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # conv -> pool -> BN -> ReLU: BN normalises the pooled (B, 16, 14, 14) maps
    assert isinstance(net.features[0][1], torch.nn.MaxPool2d)
    assert isinstance(net.features[0][2], torch.nn.BatchNorm2d)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 4
    # a count per stage, none negative (range(-1) would silently add nothing)
    for bad in ((1,), (0, 0, -1)):
        with pytest.raises(ValueError, match="one count >= 0 per stage"):
            FastCNN((16, 32, 64), dropout=0.0, pool_first=True, extra=bad)
