"""End to end: train.py in a subprocess on tiny synthetic data, resume, and one-line CLI errors."""

import json

import pytest
import torch

from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import compose_cfg, train_cli


@pytest.mark.slow
def test_train_cli_writes_run_folder(tmp_path, tiny_root):
    proc, run_dir = train_cli(
        tmp_path, tiny_root, "model=simple_cnn", "trainer.max_epochs=2", "seed=0", "scheduler=null"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    # epochs count from 1
    assert m["epochs_run"] == 2 and m["best_epoch"] in (1, 2)
    # the decision is recorded
    assert (run_dir / "config.yaml").read_text().count("precision: auto") == 0
    assert 0.0 <= m["test_acc"] <= 1.0 and len(m["confusion_matrix"]) == 10
    # every test image counted once
    assert sum(map(sum, m["confusion_matrix"])) == 200
    assert set(m["per_class"]) >= {"T-shirt/top", "Ankle boot"}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (
        run_dir / "checkpoints" / f"epoch{m['best_epoch']:03d}-val_acc{m['val_acc_best']:.4f}.ckpt"
    ).is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    # the TensorBoard run is named after the overrides that matter (not data.root, threads, ...)
    tb = {p.parent.name for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    (name,) = tb
    assert "model=simple_cnn" in name and "trainer.max_epochs=2" in name and "threads" not in name
    # plumbing out; a repeated key once
    assert "trainer.max_epochs=1" not in name and "root" not in name
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/2 (" in log and "epoch 2/2 (" in log and "train loss " in log and "| val loss " in log
    # no tqdm redraws when not a terminal
    assert "\r" not in proc.stdout and "Epoch 0:" not in proc.stdout

    # resume from last.ckpt into a new folder: the epoch count continues, the old run is untouched
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    proc, run2 = train_cli(
        tmp_path,
        tiny_root,
        "model=simple_cnn",
        "trainer.max_epochs=3",
        "seed=0",
        "scheduler=null",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        run_dir=tmp_path / "run2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m2 = json.loads((run2 / "metrics.json").read_text())
    assert m2["epochs_run"] == 3 and m2["global_steps"] == 3 * (m["global_steps"] // 2)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before


def test_learns_the_synthetic_task(tmp_path, tiny_root):
    cfg = compose_cfg(tmp_path, tiny_root, ["model=simple_cnn", "trainer.max_epochs=4", "logger=csv"])
    m = run(cfg)
    # chance is 0.1; the squares are easy
    assert m["test_acc"] > 0.5


def test_same_seed_same_result(tmp_path, tiny_root):
    res = [
        run(compose_cfg(tmp_path / str(i), tiny_root, ["model=mlp", "seed=0", "logger=csv"]))
        for i in range(2)
    ]
    assert res[0]["test_loss"] == res[1]["test_loss"]


def test_val_size_zero_tests_last_weights(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "data.val_size=0", "logger=csv"]))
    assert m["val_acc_best"] is None and m["best_checkpoint"].endswith("last.ckpt")


def test_refuses_to_overwrite_a_run(tmp_path, tiny_root):
    run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "logger=csv"]))
    with pytest.raises(UserError, match="already exists"):
        run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "logger=csv"]))


def test_checkpoint_loads_weights_only(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "logger=csv"]))
    # no arbitrary pickles
    ckpt = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)
    assert "state_dict" in ckpt


@pytest.mark.parametrize(
    "override, message",
    [
        # one case in the fast suite; the rest are slow (a process each)
        ("data.batch_size=0", "data.batch_size=0"),
        *[
            pytest.param(o, m, marks=pytest.mark.slow)
            for o, m in [
                ("model=resnet9000", "Could not find 'model/resnet9000'"),
                ("trainer.max_epochs=-5", "trainer.max_epochs=-5"),
                ("data.val_size=60000", "data.val_size=60000"),
                ("ckpt_path=/nonexistent.ckpt", "no such file"),
                ("data=csv", "Missing mandatory value: data.train_csv"),
            ]
        ],
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, tiny_root, override, message):
    proc, _ = train_cli(tmp_path, tiny_root, override)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "overrides, bar",
    [
        ([], "ours"),
        # no bar at all, not Lightning's own in its place
        (["callbacks.progress_bar=null"], None),
        # asked for
        (["callbacks.progress_bar=null", "+trainer.enable_progress_bar=true"], "lightning's"),
    ],
)
def test_progress_bar_null_means_no_bar(tmp_path, tiny_root, overrides, bar):
    from fmnist_lit.components import build_trainer
    from fmnist_lit.console import ProgressBar

    trainer = build_trainer(compose_cfg(tmp_path, tiny_root, ["logger=csv", *overrides]))
    got = trainer.progress_bar_callback
    if bar is None:
        assert got is None
    elif bar == "ours":
        assert isinstance(got, ProgressBar)
    else:
        assert got is not None and not isinstance(got, ProgressBar)
