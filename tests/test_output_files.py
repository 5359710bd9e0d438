"""What a run leaves for people to read: metrics.json without float noise, csv/metrics.csv counting epochs from 1,
the sweep's leaderboard on the console with readable labels, and a quiet console."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fmnist_lit.evaluate import evaluate
from fmnist_lit.sweep import SweepSummary
from fmnist_lit.train import run
from fmnist_lit.utils import write_json
from tests.helpers import TINY, compose_cfg, fake_job, run_script

# a decimal number, and its significant digits
DECIMAL = re.compile(r"\d+\.\d+")


def noise(text: str) -> list[str]:
    """The numbers of `text` with more than 9 significant digits: float32 noise (0.9144999980926514) or float64
    noise (19.999999999999996)."""
    return [d for d in DECIMAL.findall(text) if len(d.replace(".", "").lstrip("0")) > 9]


def test_write_json_drops_float_noise_and_keeps_matrix_rows_on_one_line(tmp_path):
    # 0.9144999980926514: a float32 metric as Python sees it
    acc = float(torch.tensor(0.9145))
    write_json(
        tmp_path / "m.json",
        {"acc": acc, "temperature": 19.999999999999996, "cm": [[1, 2], [3, 4]], "command": "w=[32,64]"},
    )
    text = (tmp_path / "m.json").read_text()
    assert '"acc": 0.9145,' in text and '"temperature": 20.0,' in text and not noise(text)
    assert "    [1, 2],\n    [3, 4]\n" in text and '"w=[32,64]"' in text
    # the same float32 as before: nothing of the metric is lost
    assert np.float32(json.loads(text)["acc"]) == np.float32(acc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_root) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    run(compose_cfg(out, tiny_root, ["model=mlp", "logger=csv", "trainer.max_epochs=2"]))
    return out


def test_metrics_json_is_readable_and_eval_reproduces_it(trained, tiny_root, tmp_path):
    m = json.loads((trained / "metrics.json").read_text())
    cfg = OmegaConf.create(
        {
            "ckpt_path": m["best_checkpoint"],
            "data": {"root": str(tiny_root)},
            "accelerator": "cpu",
            "threads": 1,
            "report": {"enabled": False},
            "paths": {"output_dir": str(tmp_path / "eval")},
        }
    )
    evaluate(cfg)
    e = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert e["test_acc"] == m["test_acc"] and e["confusion_matrix"] == m["confusion_matrix"]
    for path in (trained / "metrics.json", tmp_path / "eval" / "metrics.json"):
        text = path.read_text()
        assert not noise(text), noise(text)
        # one line per row of the confusion matrix
        rows = re.findall(r"^ *\[[\d, ]+\],?$", text, flags=re.MULTILINE)
        assert len(rows) == 10, text


def test_csv_log_counts_epochs_from_one(trained):
    lines = (trained / "csv" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("epoch")
    assert {row.split(",")[column] for row in lines[1:]} == {"1", "2"}


def _job(sweep: Path, num: int, overrides: list[str], val: float) -> None:
    metrics = {
        "test_acc": val - 0.01,
        "val_acc_best": val,
        "params": 100,
        "epochs_run": 2,
        "wall_seconds": 5.0,
    }
    fake_job(sweep, num, overrides, metrics)


def test_sweep_prints_its_leaderboard_with_rounded_floats(tmp_path, caplog):
    # Optuna samples floats to the last bit; labels show 4 significant digits, the CSV's own column all of them
    _job(tmp_path, 0, ["optimizer.lr=0.0012345678901", "model=mlp"], 0.90)
    _job(tmp_path, 1, ["optimizer.lr=0.03", "model=mlp"], 0.80)
    with caplog.at_level(logging.INFO, logger="fmnist_lit.sweep"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    (message,) = [r.getMessage() for r in caplog.records if "leaderboard" in r.getMessage()]
    rows = [line for line in message.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `optimizer.lr=0.001235` | 90.00 |") and "`optimizer.lr=0.03`" in rows[1]
    assert "optimizer.lr=0.0012345678901" not in (tmp_path / "leaderboard.md").read_text()
    assert "0.0012345678901" in (tmp_path / "leaderboard.csv").read_text()


@pytest.mark.slow
def test_console_is_quiet_in_a_short_run(tmp_path, tiny_root):
    """No device inventory, seed or advertisement lines, no log_every_n_steps warning (12 batches < 50), and the
    layer table without Lightning's FLOPs column."""
    tiny = [o for o in TINY if o != "callbacks.model_summary=null"]
    proc = run_script(
        "train.py",
        f"data.root={tiny_root}",
        *tiny,
        "model=mlp",
        "logger=csv",
        "report.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        # Python's default warning filters, as a user has them
        env={"PYTHONWARNINGS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    # the layer table is there
    assert "| Params" in console
    for noise in ("GPU available", "TPU available", "Seed set", "💡", "log_every_n_steps", "FLOPs", "Flops"):
        assert noise not in console, console
    assert "Trainer.fit` stopped" not in console
