"""The time-to-accuracy pieces (experiment=speed94/speed95): whitening stem, dirac init, BN/bias LR multiplier,
alternating flip, multi-view TTA; and the recipes end to end on the tiny data (the stem reproduced by eval.py)."""

import json

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fmnist_lit import batches as B
from fmnist_lit import optim
from fmnist_lit.models import SpeedNet, Whiten
from fmnist_lit.module import LitClassifier
from tests.helpers import compose_cfg, run_script, train_cli


def test_whitening_stem_whitens_the_patches_it_was_fitted_on():
    torch.manual_seed(0)
    # correlated pixels: a smooth random field, as images are
    x = torch.nn.functional.avg_pool2d(torch.randn(200, 1, 30, 30), 3, stride=1)
    stem = Whiten(kernel=2)
    stem.fit(x)
    out = torch.nn.functional.conv2d(x, stem.weight)
    # (C, N * P): the first k^2 channels (the filters; the rest are their negatives)
    feats = out[:, :4].transpose(0, 1).reshape(4, -1)
    cov = torch.cov(feats)
    # decorrelated, unit variance up to the eps added to each eigenvalue
    assert torch.allclose(cov - torch.diag(cov.diag()), torch.zeros(4, 4), atol=1e-4)
    assert ((cov.diag() > 0.9) & (cov.diag() < 1.0 + 1e-4)).all()
    assert torch.equal(out[:, 4:], -out[:, :4])


def test_dirac_init_starts_as_identity_on_the_first_channels():
    net = SpeedNet(widths=[8, 16], whiten_kernel=2, whiten=True, dirac=True, head_scale=1.0)
    conv = net.features[2]
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1
    assert torch.equal(conv.weight[0, 0], ident) and torch.equal(conv.weight[1, 0], torch.zeros(3, 3))
    plain = SpeedNet(widths=[8, 16], whiten_kernel=2, whiten=True, dirac=False, head_scale=1.0)
    assert not torch.equal(plain.features[2].weight[0, 0], ident)


def test_depth_adds_convs_after_each_stages_pool():
    """depth 3 (airbench96's block): one more conv -> BN -> GELU per stage, at the pooled resolution, dirac-started
    like the others; the output shape does not change."""
    nets = {
        d: SpeedNet(widths=[8, 16], whiten_kernel=2, whiten=True, dirac=True, head_scale=1.0, depth=d)
        for d in (1, 2, 3)
    }
    convs = {d: [m for m in net.features if isinstance(m, nn.Conv2d)] for d, net in nets.items()}
    assert {d: len(c) for d, c in convs.items()} == {1: 2, 2: 4, 3: 6}
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1
    assert all(torch.equal(c.weight[0, 0], ident) for c in convs[3])
    # the input size each conv of the depth-3 net sees: the extra ones run on the stage's pooled maps
    sizes = []
    for conv in convs[3]:
        conv.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[-1]))
    x = torch.randn(2, 1, 28, 28)
    assert all(net(x).shape == (2, 10) for net in nets.values())
    assert sizes == [27, 13, 13, 13, 6, 6]


@pytest.mark.parametrize("depth", [0, 2.5, "3", True])
def test_depth_must_be_a_whole_number_of_convs(depth):
    with pytest.raises(ValueError, match="convs per stage, a whole number >= 1"):
        SpeedNet(widths=[8], whiten_kernel=2, whiten=True, dirac=True, head_scale=1.0, depth=depth)


def test_bias_lr_multiplier_makes_two_groups_that_keep_their_ratio(tmp_path, tiny_root):
    cfg = compose_cfg(tmp_path, tiny_root, ["experiment=speed94", "model.bias_lr_mult=8"])
    model = instantiate(cfg.model)
    model.__dict__["_trainer"] = type("T", (), {"max_epochs": 2})()
    conf = optim.build(model, model.optimizer_fn, model.scheduler_fn, 50, None, 8.0)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    weights, norms = opt.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in norms["params"])
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])
    # per-step decay LR x weight_decay is the configured one in both groups
    assert norms["weight_decay"] * 8 == pytest.approx(weights["weight_decay"])
    for _ in range(30):
        opt.step()
        sched.step()
        assert norms["lr"] == pytest.approx(8 * weights["lr"])


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    # 40 distinct asymmetric images: pixel [i, 0, 0] = i, the rest 0, so a mirror moves it to [i, 0, -1]
    x = torch.zeros(40, 2, 3, dtype=torch.uint8)
    x[:, 0, 0] = torch.arange(1, 41)
    y = torch.arange(40)
    epoch = [0]
    tb = B.TensorBatches(x, y, 7, shuffle=True, seed=5, epoch_fn=lambda: epoch[0], flip_alternate=True)
    flipped = []
    for e in range(3):
        epoch[0] = e
        # (40,) bool by label: mirrored this epoch
        f = torch.zeros(40, dtype=torch.bool)
        for xb, yb in tb:
            f[yb] = xb[:, 0, -1] > 0
        flipped.append(f)
    assert 10 < flipped[0].sum() < 30
    assert torch.equal(flipped[1], ~flipped[0]) and torch.equal(flipped[2], flipped[0])


def test_shift_tta_is_the_weighted_mean_of_the_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    kw = {"optimizer": None, "scheduler": None, "label_smoothing": 0.0, "compile": False, "bias_lr_mult": 1.0}
    model = LitClassifier(net, **kw, channels_last=False, tta_flip=False, tta_shift=1).eval()
    x = torch.randn(4, 1, 28, 28)
    bg = (0 - B.MEAN) / B.STD
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=bg)
    expected = 0.5 * net(x) + 0.25 * (net(padded[..., :28, :28]) + net(padded[..., 2:, 2:]))
    assert torch.allclose(model.eval_logits(x), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["speed94", "speed95"])
def test_speed_recipe_trains_and_eval_reproduces_it(tmp_path, tiny_root, recipe):
    proc, run = train_cli(tmp_path, tiny_root, f"experiment={recipe}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    stem = ckpt["state_dict"]["net.whiten.weight"]
    # fitted to the data, not the identity it starts as
    assert not torch.equal(stem[:4].flatten(1).abs(), torch.eye(4))
    out = tmp_path / "eval"
    proc = run_script("eval.py", str(run), f"data.root={tiny_root}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["test_acc"] == metrics["test_acc"]


def test_bias_lr_multiplier_without_an_optimizer_lr_is_one_error(tmp_path, tiny_root):
    from fmnist_lit.utils import UserError
    from fmnist_lit.validate import check_train_config

    cfg = compose_cfg(tmp_path, tiny_root, ["experiment=speed94", "~scheduler", "~optimizer.lr"])
    model = instantiate(cfg.model)
    with pytest.raises(UserError, match="set optimizer.lr"):
        optim.param_groups(model, model.optimizer_fn, 64.0)
    # and train.py refuses it before it writes anything
    with pytest.raises(UserError, match="set optimizer.lr"):
        check_train_config(cfg, resolved=False)


def test_fit_keeps_the_validation_logits_of_the_checkpoint_it_tests(tmp_path, tiny_root):
    """The best val/acc epoch's validation logits (EMA weights swapped in, 6-view TTA) are those of the checkpoint
    saved for it, bit for bit: calibration fits its temperature on them instead of predicting the split again."""
    from fmnist_lit.calibration import predict_logits
    from fmnist_lit.components import build_trainer

    overrides = ["experiment=speed94", "trainer.max_epochs=3", "trainer.precision=32-true", "seed=0"]
    cfg = compose_cfg(tmp_path, tiny_root, [*overrides, "trainer.check_val_every_n_epoch=1", "logger=csv"])
    dm, model, trainer = instantiate(cfg.data), instantiate(cfg.model), build_trainer(cfg)
    trainer.fit(model, datamodule=dm)
    best = trainer.checkpoint_callback.best_model_path
    assert best and model.best_val_logits is not None and len(model.best_val_logits) == len(dm.val_x)
    kept = model.best_val_logits
    model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    assert torch.equal(predict_logits(trainer, model, dm, dm.val_x, dm.val_y), kept)


def test_calibration_uses_given_validation_logits_and_predicts_otherwise(monkeypatch, tiny_root, tmp_path):
    from fmnist_lit import calibration

    cfg = compose_cfg(tmp_path, tiny_root, ["model=mlp"])
    dm = instantiate(cfg.data)
    dm.setup()
    g = torch.Generator().manual_seed(0)
    val, test = torch.randn(len(dm.val_x), 10, generator=g), torch.randn(len(dm.test_x), 10, generator=g)
    predicted = []
    monkeypatch.setattr(calibration, "predict_logits", lambda *a: predicted.append(1) or 2 * val)
    c = calibration.calibrate(None, None, dm, test, val_logits=val)
    assert not predicted and c["temperature"] == calibration.fit_temperature(val, dm.val_y)
    # logits of part of the split (a limited validation pass) are not enough: the split is predicted
    c = calibration.calibrate(None, None, dm, test, val_logits=val[:10])
    assert predicted and c["temperature"] == calibration.fit_temperature(2 * val, dm.val_y)
