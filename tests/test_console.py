"""What the user sees: the per-epoch log line, quiet third-party noise, the resume command, the layer
table, checkpoint names from epoch 1, TensorBoard's tag layout and HParams columns, the report's words."""

from __future__ import annotations

import logging
import types
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fmnist_lit import console, plots
from fmnist_lit.console import EpochLog, NetSummary, quiet_third_party, resume_command
from fmnist_lit.loggers import run_label, tb_tag
from fmnist_lit.report import read_history
from fmnist_lit.report_page import report_page, selection_sentence
from fmnist_lit.resume import Checkpoint
from fmnist_lit.tensorboard_report import sweep_hparams


def fake_trainer(epoch: int, max_epochs: int, metrics: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        current_epoch=epoch,
        max_epochs=max_epochs,
        is_global_zero=True,
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        sanity_checking=False,
    )


def test_epoch_line_reports_the_epoch_that_just_ended(caplog):
    cb = EpochLog()
    metrics = {
        "train/loss": 0.61,
        "train/ce": 0.42,
        "train/acc": 0.85,
        "train/loss_step": 0.5,
        "epoch": 0.0,
        "val/acc": 0.9,
        "val/loss": 0.3,
        "val/f1": 0.89,
        "val/acc_best": 0.9,
    }
    t = fake_trainer(0, 3, metrics)
    cb.on_train_start(t, None)
    cb.on_validation_end(t, None)
    # Lightning logs train/* after this hook: nothing printed yet
    cb.on_train_epoch_end(t, None)
    with caplog.at_level(logging.INFO, logger="fmnist_lit.console"):
        assert not caplog.records
        t.current_epoch = 1
        # the epoch is complete now
        cb.on_train_epoch_start(t, None)
    (line,) = [r.getMessage() for r in caplog.records]
    # then its duration and the run's ETA
    assert line.startswith("epoch 1/3 (")
    assert line.endswith(
        "| train loss 0.6100 ce 0.4200 acc 0.8500 | val loss 0.3000 acc 0.9000 acc_best 0.9000 f1 0.8900"
    )
    assert "loss_step" not in line and "epoch 0" not in line


def test_epoch_line_leaves_out_stale_validation():
    groups = EpochLog.metric_groups(
        {"train/loss": torch.tensor(1.0), "val/acc": torch.tensor(0.5)}, val=False
    )
    assert groups == ["train loss 1.0000"]


def test_quiet_third_party_drops_deprecations_and_adverts():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit(
            "old API", FutureWarning, "x.py", 1, module="lightning.pytorch.utilities._pytree"
        )
        warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="fmnist_lit.module")
    # the project's own warnings still show
    assert [str(w.message) for w in seen] == ["ours"]
    # Lightning's INFO chatter (GPU/TPU inventory, "Seed set", the litlogger tip, "Trainer.fit stopped") is dropped,
    # its warnings are kept
    chatty = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not chatty.isEnabledFor(logging.INFO) and chatty.isEnabledFor(logging.WARNING)
    assert not logging.getLogger("lightning.fabric.utilities.seed").isEnabledFor(logging.INFO)


def test_resume_command_repeats_the_run_with_last_ckpt(monkeypatch):
    monkeypatch.setattr(
        console.sys, "argv", ["train.py", "model=mlp", "hydra.run.dir=x", "ckpt_path=old.ckpt"]
    )
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.initialized", staticmethod(lambda: False))
    assert resume_command(Path("out/checkpoints/last.ckpt")) == (
        "python train.py model=mlp ckpt_path=out/checkpoints/last.ckpt"
    )


def test_net_summary_lists_the_network_without_flops(caplog):
    data = [
        (" ", ["0", "1", "2", "3"]),
        ("Name", ["net", "net.0", "criterion", "val_metrics"]),
        ("Type", ["MLP", "Linear", "CrossEntropyLoss", "MetricCollection"]),
        ("Params", ["7.9 K", "7.9 K", "0", "0"]),
        ("Mode", ["train"] * 4),
        ("FLOPs", ["0"] * 4),
    ]
    with caplog.at_level(logging.INFO, logger="fmnist_lit.console"):
        NetSummary.summarize(data, 7850, 7850, 0.0314, {"train": 4, "eval": 0}, 0)
    lines = caplog.records[0].getMessage().splitlines()
    assert [line.split() for line in lines[1:2] + lines[3:5]] == [
        ["|", "Name", "|", "Type", "|", "Params"],
        ["0", "|", "net", "|", "MLP", "|", "7.9", "K"],
        ["1", "|", "net.0", "|", "Linear", "|", "7.9", "K"],
    ]
    assert lines[-1] == "7.9 K parameters (7.9 K trainable), 0.0 MB"
    assert "criterion" not in lines and not any("FLOPs" in line or "Flops" in line for line in lines)


def test_checkpoint_names_count_epochs_from_one(tmp_path):
    cb = Checkpoint(
        dirpath=tmp_path, filename="epoch{epoch:03d}-val_acc{val/acc:.4f}", auto_insert_metric_name=False
    )
    name = cb.format_checkpoint_name({"epoch": torch.tensor(0), "val/acc": torch.tensor(0.875)})
    # the weights after the first epoch
    assert Path(name).name == "epoch001-val_acc0.8750.ckpt"


def test_tensorboard_tags_put_the_curves_first():
    assert tb_tag("train/loss_step") == "train/loss_step" and tb_tag("val/acc") == "val/acc"
    assert tb_tag("lr-AdamW") == "train/lr" and tb_tag("epoch") is None
    assert tb_tag("test/acc") == "verdict/test_acc"
    assert sorted(["verdict", "val", "train", "test_each_epoch"])[-3:] == ["train", "val", "verdict"]


def test_run_label_without_hydra_is_defaults(monkeypatch):
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.get", staticmethod(lambda: 1 / 0))
    assert run_label() == "defaults"


def test_hparams_are_the_swept_settings(monkeypatch):
    task = [
        "model=mlp",
        "threads=1",
        "data.root=/x",
        "optimizer.lr=0.01",
        "+trainer.gradient_clip_val=1.0",
        "data.check_md5=false",
    ]
    monkeypatch.setattr(
        "hydra.core.hydra_config.HydraConfig.get",
        staticmethod(lambda: OmegaConf.create({"overrides": {"task": task}})),
    )
    declared = OmegaConf.create(
        {
            "model": "mlp",
            "net": {"_target_": "fmnist_lit.models.MLP", "hidden": [512, 256]},
            "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01},
            "scheduler": None,
            "augment_flip": False,
            "seed": 0,
        }
    )
    hp = sweep_hparams(declared)
    # overridden, not declared: a column too; plumbing is not; whole numbers as text (not 0.0000)
    assert hp == {
        "model": "mlp",
        "net": "MLP",
        "net/hidden": "[512, 256]",
        "optimizer": "AdamW",
        "optimizer/lr": 0.01,
        "scheduler": "none",
        "augment_flip": "false",
        "seed": "0",
        "trainer.gradient_clip_val": "1.0",
    }


def test_history_splits_epochs_and_steps(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,lr-AdamW,step,train/acc,train/loss_step,val/acc\n"
        ",0.001,9,,,\n1,,9,,2.0,\n1,,19,,,0.8\n1,,19,0.7,,\n,0.002,29,,,\n2,,39,,,0.9\n2,,39,0.85,,\n"
    )
    epochs, steps = read_history(csv)
    # epochs from 1
    assert epochs == {"val/acc": {1: 0.8, 2: 0.9}, "train/acc": {1: 0.7, 2: 0.85}}
    # 20 steps per epoch
    assert steps == {
        "lr-AdamW": {0.5: 0.001, 1.5: 0.002},
        "train/loss_step": {0.5: 2.0},
    }
    fig = plots.curves_figure(epochs, steps, selected=2)
    # accuracy, loss, learning rate
    assert len(fig.axes) == 3


def test_report_says_how_the_weights_were_chosen():
    assert "best validation accuracy (epoch 3)" in selection_sentence(
        {"checkpoint_selection": "best val/acc", "best_epoch": 3}
    )
    assert "no validation split" in selection_sentence({"checkpoint_selection": "last", "epochs_run": 5})
    assert "eval.py was given last.ckpt" in selection_sentence(
        {"checkpoint_selection": "last", "source_run": "r", "epoch": 5, "val_acc_best": 0.9}
    )
    avg = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10}
    rep = {"macro avg": avg, "weighted avg": avg, "classes": {}, "accuracy": 0.5}
    page = report_page(
        {
            "test_acc": 0.5,
            "wall_seconds": 61.37,
            "epochs_run": 2,
            "max_epochs": 10,
            "cut_short": {"limit_train_batches": 20},
        },
        rep,
        {},
        0.5,
    )
    assert "**Cut short:** `trainer.limit_train_batches=20`" in page
    assert "| 61 s |" in page and "2 of 10 (stopped early)" in page


@pytest.mark.parametrize("n", [1, 3])
def test_leaderboard_png_without_error_bars_for_single_runs(tmp_path, monkeypatch, n):
    from fmnist_lit.leaderboard import to_png

    summaries = [
        {
            "config": "model=mlp",
            "n": n,
            "val_acc_best_mean": 0.89,
            "val_acc_best_std": float("nan") if n == 1 else 0.003,
            "test_acc_mean": 0.885,
            "test_acc_std": float("nan") if n == 1 else 0.002,
        },
        # no validation accuracy: only the test dot
        {"config": "model=cnn", "n": 1, "test_acc_mean": 0.91, "test_acc_std": float("nan")},
    ]
    import matplotlib.axes

    # (x, y, xerr, marker face, label) of every dot drawn
    calls = []
    draw = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, **kw):
        calls.append((x, y, kw.get("xerr"), kw.get("mfc"), kw.get("label")))
        return draw(self, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    to_png(tmp_path / "l.png", summaries)
    assert (tmp_path / "l.png").stat().st_size > 0
    # row 0: an open val dot and a filled test dot, ± std bars only with several seeds; row 1: the test dot alone
    val0, test0, cnn = sorted(calls, key=lambda c: (c[3] != "none", round(c[1])))
    assert (val0[0], val0[3], round(val0[1])) == (pytest.approx(89.0), "none", 0)
    assert (test0[0], round(test0[1])) == (pytest.approx(88.5), 0)
    assert (cnn[0], round(cnn[1]), cnn[2]) == (pytest.approx(91.0), 1, None)
    if n == 1:
        assert val0[2] is None and test0[2] is None
    else:
        assert (val0[2], test0[2]) == (pytest.approx(0.3), pytest.approx(0.2))
    assert sorted(c[4] for c in calls if c[4]) == ["test acc (reported)", "val acc best (ranks the rows)"]
