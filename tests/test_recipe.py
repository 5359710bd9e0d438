"""The ResNet recipe: random erasing, EMA of the weights, flip TTA, experiment=resnet end to end."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel

from fmnist_lit import batches as B
from fmnist_lit.callbacks import EMA
from fmnist_lit.evaluate import evaluate
from fmnist_lit.module import LitClassifier
from fmnist_lit.train import run
from tests.helpers import ROOT, compose_cfg, eval_cfg, make_datamodule, run_script, train_cli

# the normalised pixel range
LO, HI = (0 - B.MEAN) / B.STD, (1 - B.MEAN) / B.STD


def batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return B.normalize_uint8(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g))


def test_augment_keeps_shape_dtype_and_range():
    x = batch()
    for kw in ({"pad": 2, "flip": True, "erase": 1.0}, {"pad": 0, "flip": False, "erase": 0.5}):
        out = B.augment(x, **kw)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= LO - 1e-6 and out.max() <= HI + 1e-6


def test_erasing_is_one_rectangle_inside_the_image():
    # any erased pixel becomes a number
    x = torch.full((256, 1, 28, 28), float("nan"))
    torch.manual_seed(0)
    out = B.random_erase(x, p=1.0)
    areas = []
    for img in out[:, 0]:
        rows, cols = (~img.isnan()).nonzero(as_tuple=True)
        # p=1: every image erased
        assert len(rows) > 0
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        assert 0 <= r0 <= r1 < 28 and 0 <= c0 <= c1 < 28
        # a filled rectangle
        assert len(rows) == (r1 - r0 + 1) * (c1 - c0 + 1)
        areas.append(len(rows) / 784)
        h, w = int(r1 - r0 + 1), int(c1 - c0 + 1)
        # aspect within [0.3, 1/0.3] up to rounding
        assert h / w <= 1 / 0.3 + 1 and w / h <= 1 / 0.3 + 1
    # scale (0.02, 0.4) of the image, up to rounding
    assert 0.01 <= min(areas) and max(areas) <= 0.45
    # p=0: nothing erased
    assert torch.isnan(B.random_erase(x, p=0.0)).all()
    share = (~torch.isnan(B.random_erase(x, p=0.5)).flatten(1)).any(1).float().mean()
    assert 0.35 < share < 0.65


def test_per_batch_augmentation_is_reproducible_under_a_seed():
    x = batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(B.augment(x, pad=2, flip=True, erase=0.5))
    assert torch.equal(*outs)
    torch.manual_seed(124)
    assert not torch.equal(outs[0], B.augment(x, pad=2, flip=True, erase=0.5))


def test_augmentation_only_in_training(tmp_path, tiny_root):
    dm = make_datamodule(
        tiny_root, tmp_path, augment_pad=2, augment_flip=True, augment_erase=1.0, channels_last=False
    )
    raw = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8)
    y = torch.zeros(32, dtype=torch.long)
    want = B.normalize_uint8(raw)
    # no trainer, or validate/test/predict
    for trainer in (None, SimpleNamespace(training=False)):
        dm.trainer = trainer
        assert torch.equal(dm.on_after_batch_transfer((raw, y), 0)[0], want)
    dm.trainer = SimpleNamespace(training=True)
    assert not torch.equal(dm.on_after_batch_transfer((raw, y), 0)[0], want)


def test_flip_tta_is_the_mean_of_two_passes_and_off_by_default():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x = batch(8)
    kw = {
        "optimizer": None,
        "scheduler": None,
        "label_smoothing": 0.0,
        "compile": False,
        "channels_last": False,
        "tta_shift": 0,
        "bias_lr_mult": 1.0,
    }
    plain = LitClassifier(net, **kw, tta_flip=False).eval()
    # off by default
    assert torch.equal(plain.eval_logits(x), net(x))
    tta = LitClassifier(net, **kw, tta_flip=True).eval()
    assert torch.allclose(tta.eval_logits(x), (net(x) + net(x.flip(3))) / 2)
    assert not torch.allclose(tta.eval_logits(x), net(x))
    y = torch.zeros(8, dtype=torch.long)
    # validation/test use it
    assert torch.equal(tta._step((x, y))[1], tta.eval_logits(x))
    # training does not
    assert torch.equal(tta._step((x, y), train=True)[1], net(x))


def test_recipe_is_off_by_default(tmp_path, tiny_root):
    for model in ("mlp", "simple_cnn", "bn_gap", "fast_cnn", "resnet"):
        cfg = compose_cfg(tmp_path, tiny_root, [f"model={model}"])
        assert cfg.model.tta_flip is False and cfg.data.augment_erase == 0.0 and cfg.callbacks.ema is None
        assert instantiate(cfg.model).hparams.tta_flip is False


TINY_RESNET = ["model.net.widths=[8,8,16]", "model.net.blocks=1"]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, tiny_root):
    d = tmp_path_factory.mktemp("ema")
    cfg = compose_cfg(
        d,
        tiny_root,
        [
            "experiment=resnet",
            *TINY_RESNET,
            "trainer.max_epochs=2",
            "trainer.precision=32-true",
            "callbacks.ema.decay=0.9",
            "logger=csv",
            "report.enabled=false",
            "report.test_each_epoch=true",
            "callbacks=every_epoch",
        ],
    )
    return d, run(cfg)


def test_checkpoint_holds_the_averaged_weights_and_buffers(ema_run):
    _, m = ema_run
    ckpt = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)
    avg, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert avg.keys() == raw.keys()
    differ = {k for k in avg if avg[k].is_floating_point() and not torch.equal(avg[k], raw[k])}
    # parameters
    assert "net.stem.weight" in differ and "net.head.5.weight" in differ
    # BN buffers averaged too
    assert "net.head.0.running_mean" in differ and "net.head.0.running_var" in differ


def test_eval_and_test_each_epoch_see_the_averaged_weights(ema_run, tmp_path, tiny_root):
    run_dir, m = ema_run
    # rebuilt from state_dict (the average)
    e = evaluate(eval_cfg(tmp_path, tiny_root, m["best_checkpoint"]))
    assert e["test_acc"] == m["test_acc"] and e["test_loss"] == pytest.approx(float(m["test_loss"]), abs=1e-6)
    # the per-epoch test pass of the best epoch ran with the same (averaged) weights as the final test
    rows = [r.split(",") for r in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    head = rows[0]
    per_epoch = {
        int(r[head.index("epoch")]): float(r[head.index("test_each_epoch/loss")])
        for r in rows[1:]
        if r[head.index("test_each_epoch/loss")]
    }
    assert per_epoch[m["best_epoch"]] == pytest.approx(float(m["test_loss"]), abs=1e-5)
    # and the raw weights give another loss: the check above can fail
    ckpt = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)
    model = instantiate(OmegaConf.load(run_dir / "config.yaml").model)
    model.load_state_dict(ckpt["current_model_state"])
    dm = make_datamodule(tiny_root, tmp_path / "dm")
    dm.setup()
    with torch.no_grad():
        raw_loss = torch.nn.functional.cross_entropy(
            model.eval().eval_logits(B.normalize_uint8(dm.test_x)), dm.test_y
        )
    assert abs(float(raw_loss) - float(m["test_loss"])) > 1e-4


def test_every_epoch_checkpoints_are_tested_after_the_run_as_during_it(ema_run, tmp_path, tiny_root):
    """callbacks=every_epoch keeps one checkpoint per epoch (averaged weights); scripts/time_to_accuracy.py tests them
    after the run and gets the accuracy the run's own per-epoch test pass (report.test_each_epoch) logged."""
    run_dir, m = ema_run
    ckpts = sorted((run_dir / "checkpoints" / "every_epoch").glob("*.ckpt"))
    assert [c.name for c in ckpts] == ["epoch001.ckpt", "epoch002.ckpt"]
    best = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    same = torch.load(ckpts[m["best_epoch"] - 1], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(best[k], same[k]) for k in best)
    # eval.py finds the run's config from checkpoints/every_epoch/ too
    e = evaluate(eval_cfg(tmp_path, tiny_root, str(ckpts[m["best_epoch"] - 1])))
    assert e["test_acc"] == m["test_acc"]

    proc = run_script("scripts/time_to_accuracy.py", str(run_dir), env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    tested = json.loads((run_dir / "test_each_epoch.json").read_text())
    rows = [r.split(",") for r in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("test_each_epoch/acc")
    logged = [float(r[col]) for r in rows[1:] if r[col]]
    assert [r["file"] for r in tested] == ["epoch001.ckpt", "epoch002.ckpt"]
    assert [r["test_acc"] for r in tested] == pytest.approx(logged, abs=1e-6)
    assert "| 2 | " in proc.stdout and f"{logged[1]:.4f} |" in proc.stdout


def test_time_to_accuracy_reuses_its_results_only_for_unchanged_checkpoints(ema_run):
    """test_each_epoch.json is read back for a checkpoint whose mtime is the one it was tested at; a rewritten
    checkpoint is tested again, and an unreadable file is replaced after a warning (no traceback)."""
    run_dir, _ = ema_run
    cache = run_dir / "test_each_epoch.json"
    script = ("scripts/time_to_accuracy.py", str(run_dir))
    env = {"PYTHONPATH": str(ROOT)}
    # this test alone: the test above made it
    if not cache.is_file():
        assert run_script(*script, env=env).returncode == 0
    real = json.loads(cache.read_text())
    # not an accuracy of this run: tells a cached row apart
    marked = [dict(r, test_acc=0.125) for r in real]
    cache.write_text(json.dumps(marked))
    ckpt = run_dir / "checkpoints" / "every_epoch" / "epoch002.ckpt"
    # as if written again
    os.utime(ckpt, (ckpt.stat().st_atime, ckpt.stat().st_mtime + 1))
    proc = run_script(*script, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    now = json.loads(cache.read_text())
    # reused
    assert now[0]["test_acc"] == 0.125 and "epoch001.ckpt: test acc" not in proc.stderr
    # tested again
    assert now[1]["test_acc"] == real[1]["test_acc"] and now[1]["mtime"] == ckpt.stat().st_mtime

    for broken in (
        '[{"file": "epoch001.ckpt"',
        '{"file": 1}',
        '[{"file": ["a"], "mtime": 1, "test_acc": 0.5}]',
    ):
        cache.write_text(broken)
        proc = run_script(*script, env=env)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"warning: {cache} is unreadable" in proc.stderr
        assert [r["test_acc"] for r in json.loads(cache.read_text())] == [r["test_acc"] for r in real]


@pytest.mark.slow
def test_experiment_resnet_end_to_end(tmp_path, tiny_root):
    proc, run_dir = train_cli(
        tmp_path,
        tiny_root,
        "experiment=resnet",
        *TINY_RESNET,
        "trainer.max_epochs=2",
        "trainer.precision=bf16-mixed",
        "report.test_each_epoch=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["model"] == "ResNet" and m["epochs_run"] == 2 and m["precision"] == "bf16-mixed"
    ckpt = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)
    # EMA on
    assert "current_model_state" in ckpt
    assert (run_dir / "report" / "report.md").is_file()


def test_ema_warmup_forgets_the_random_start():
    # the average of a weight that starts at 0 and is 1 from then on: what is left of the start is the product of
    # the decays, 0.999^300 = 74% with a fixed decay, ~1e-16 with the warm-up (1 + n) / (10 + n)
    net = torch.nn.Linear(1, 1, bias=False)
    left = {}
    for warmup in (False, True):
        torch.nn.init.zeros_(net.weight)
        average = AveragedModel(net, use_buffers=True, **EMA(decay=0.999, warmup=warmup)._kwargs)
        # the first update copies the start
        average.update_parameters(net)
        with torch.no_grad():
            net.weight.fill_(1.0)
        for _ in range(300):
            average.update_parameters(net)
        left[warmup] = 1 - average.module.weight.item()
    assert left[False] == pytest.approx(0.999**300, rel=1e-4)
    # float32
    assert left[True] == pytest.approx(math.prod((1 + n) / (10 + n) for n in range(1, 301)), abs=3e-7)
    assert left[True] < 1e-6


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_matches_the_per_tensor_formula(warmup):
    # a net with BatchNorm: float parameters and buffers, and an integer buffer (num_batches_tracked)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.randn(2, 1, 5, 5))
    average = AveragedModel(net, use_buffers=True, **EMA(decay=0.9, warmup=warmup)._kwargs)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    # the first update copies
    average.update_parameters(net)
    for n in range(1, 4):
        # moves the BN buffers and counts a batch
        net.train()(torch.randn(8, 1, 5, 5))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        for k, v in net.state_dict().items():
            expected[k] = (
                v.clone() if not v.is_floating_point() else expected[k] + (v - expected[k]) * (1 - d)
            )
        average.update_parameters(net)
    got = average.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # the lazy-init pass counted too
    assert got["1.num_batches_tracked"] == net[1].num_batches_tracked == 4


def test_tta_val_compares_flip_tta_on_the_validation_split(ema_run, tmp_path):
    """scripts/tta_val.py: with TTA it reproduces the run's own val/acc of that epoch (the run validated with flip
    TTA); without, it is the same weights on the unmirrored images alone. A bad path is one error line (exit 2),
    and the other checkpoints are still evaluated."""
    run_dir, _ = ema_run
    ckpt = run_dir / "checkpoints" / "every_epoch" / "epoch002.ckpt"
    bad = tmp_path / "stray.ckpt"
    bad.write_bytes(b"")
    proc = run_script("scripts/tta_val.py", str(bad), str(ckpt), str(ckpt), env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: ckpt_path={bad}: no " in proc.stderr and "Traceback" not in proc.stderr
    rows = [r.split(",") for r in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    head = rows[0]
    ep, acc, loss = (head.index(k) for k in ("epoch", "val/acc", "val/loss"))
    # epoch 2
    logged = next(r for r in rows[1:] if r[acc] and r[ep] == "2")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = instantiate(cfg.model, tta_flip=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    # the run's own split
    dm = instantiate(cfg.data)
    dm.setup()
    with torch.no_grad():
        logits = model.eval().eval_logits(B.normalize_uint8(dm.val_x))
    plain_acc = float((logits.argmax(1) == dm.val_y).float().mean())
    plain_loss = float(torch.nn.functional.cross_entropy(logits, dm.val_y))
    # the mirror pass changes the loss, so the check below can fail
    assert abs(plain_loss - float(logged[loss])) > 1e-3
    cells = [f"{float(logged[acc]):.2%}", f"{plain_acc:.2%}"]
    got = [r.strip("| ").split(" | ") for r in proc.stdout.splitlines() if r.startswith(f"| `{ckpt}`")]
    assert len(got) == 2 and all(g[1:3] == cells for g in got), proc.stdout
    assert [float(x) for x in got[0][4:6]] == pytest.approx([float(logged[loss]), plain_loss], abs=1e-4)
    assert "TTA gain over 2 checkpoints" in proc.stdout


def test_ensemble_val_scores_the_mean_of_the_members_softmax(ema_run, tmp_path):
    """scripts/ensemble_val.py: each member's row is the run's own val/acc of that epoch, the ensemble's row the
    accuracy of the mean of their softmax outputs, computed here; a checkpoint of a run with another validation
    split is refused in one error line (exit 2) and the others are still scored."""
    run_dir, _ = ema_run
    ckpts = [run_dir / "checkpoints" / "every_epoch" / f"epoch00{e}.ckpt" for e in (1, 2)]
    # a copy of the run whose config carves another validation split
    other = tmp_path / "other_split"
    (other / "checkpoints").mkdir(parents=True)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.data.split_seed = 1
    OmegaConf.save(cfg, other / "config.yaml")
    (other / "checkpoints" / "last.ckpt").write_bytes(ckpts[1].read_bytes())
    missing = tmp_path / "missing.ckpt"
    proc = run_script(
        "scripts/ensemble_val.py",
        str(missing),
        *map(str, ckpts),
        str(other / "checkpoints" / "last.ckpt"),
        env={"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: ckpt_path={missing}: no such file",
        (
            f"error: {other / 'checkpoints' / 'last.ckpt'}: its run's validation split differs from {ckpts[0]}'s "
            "(data.split_seed, data.val_size)"
        ),
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    rows = [r.split(",") for r in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    ep, acc = rows[0].index("epoch"), rows[0].index("val/acc")
    logged = {int(r[ep]): float(r[acc]) for r in rows[1:] if r[acc]}
    cfg = OmegaConf.load(run_dir / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup()
    probs = []
    for c in ckpts:
        model = instantiate(cfg.model)
        model.load_state_dict(torch.load(c, map_location="cpu", weights_only=True)["state_dict"])
        with torch.no_grad():
            probs.append(model.eval().eval_logits(B.normalize_uint8(dm.val_x)).softmax(1))
    ensemble = float(((probs[0] + probs[1]).argmax(1) == dm.val_y).float().mean())
    cells = dict(r.strip("| ").split(" | ") for r in proc.stdout.splitlines()[2:])
    assert cells == {
        f"`{ckpts[0]}`": f"{logged[1]:.2%}",
        f"`{ckpts[1]}`": f"{logged[2]:.2%}",
        "ensemble of the 2": f"{ensemble:.2%}",
    }, proc.stdout
