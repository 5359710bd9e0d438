"""A net of one's own: README's recipe (a module outside the package, a conf/model/<name>.yaml, `model=<name>`)
trains, evaluates to the same accuracy, predicts and exports; a run folder naming a net the user has not declared
is still refused, whatever it says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fmnist_lit import checkpoint
from fmnist_lit.checkpoint import TRUST_ENV, run_config
from fmnist_lit.utils import UserError
from tests.helpers import ROOT, TINY, assert_one_error_line

# README's example, verbatim in spirit: a plain nn.Module from (B, 1, 28, 28) to (B, 10)
MYNETS = """
from torch import nn


class Tiny(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)
        )

    def forward(self, x):
        return self.body(x)
"""
TINY_YAML = "# @package model.net\n_target_: mynets.Tiny\nwidth: 8\n"


def crafted_run(run: Path, target: str) -> Path:
    """A run folder whose config names `target` as its net; returns its checkpoint's path."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"model:\n  _target_: fmnist_lit.module.LitClassifier\n  net: {{_target_: {target}}}\n"
        "data: {_target_: fmnist_lit.data.FashionMNISTDataModule}\ntrainer: {precision: 32-true}\n"
    )
    torch.save({"state_dict": {}}, run / "checkpoints" / "x.ckpt")
    return run / "checkpoints" / "x.ckpt"


def test_an_undeclared_net_is_refused_with_the_way_to_trust_it(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UserError, match=rf"refuses to build `mynets.Tiny`.*{TRUST_ENV}=mynets.Tiny"):
        run_config(crafted_run(tmp_path / "run", "mynets.Tiny"))


def test_the_environment_trusts_exact_names_only(tmp_path, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, "mynets.Tiny, other.Net")
    _, cfg = run_config(crafted_run(tmp_path / "ok", "mynets.Tiny"))
    assert cfg.model.net._target_ == "mynets.Tiny"
    # an attribute path below a trusted name is another callable: refused
    for i, target in enumerate(["mynets.Tiny.load", "mynets.os.system", "mynets"]):
        with pytest.raises(UserError, match="refuses to build"):
            run_config(crafted_run(tmp_path / f"bad{i}", target))


def test_a_model_config_of_the_checkout_trusts_its_net(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "tiny.yaml").write_text(TINY_YAML)
    monkeypatch.setattr(checkpoint, "CONF_DIR", str(conf))
    assert "mynets.Tiny" in checkpoint.trusted_nets()
    _, cfg = run_config(crafted_run(tmp_path / "run", "mynets.Tiny"))
    assert OmegaConf.to_container(cfg.model.net) == {"_target_": "mynets.Tiny"}


def checkout_copy(dest: Path) -> Path:
    """A checkout of the project (package, configs, entry points) where README's recipe can be followed
    literally: its own conf/ and its root on the import path, as `python train.py` from a clone has them."""
    shutil.copytree(ROOT / "fmnist_lit", dest / "fmnist_lit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", dest / "conf")
    for script in ("train.py", "eval.py", "predict.py", "export.py"):
        shutil.copy(ROOT / script, dest / script)
    return dest


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != TRUST_ENV}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**base, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


@pytest.mark.slow
def test_readme_recipe_trains_evaluates_predicts_exports(tmp_path, tiny_root):
    repo = checkout_copy(tmp_path / "checkout")
    (repo / "mynets.py").write_text(MYNETS)
    (repo / "conf" / "model" / "tiny.yaml").write_text(TINY_YAML)
    run = tmp_path / "run"
    proc = cli(repo, "train.py", "model=tiny", f"data.root={tiny_root}", *TINY, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["model"] == "Tiny"
    ckpt = trained["best_checkpoint"]

    proc = cli(repo, "eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test_acc"] == trained["test_acc"]

    image = tmp_path / "item.png"
    Image.new("L", (28, 28), 0).save(image)
    proc = cli(repo, "predict.py", ckpt, str(image))
    assert proc.returncode == 0 and "item.png" in proc.stdout, proc.stderr[-3000:]

    out = tmp_path / "model.pt"
    proc = cli(
        repo, "export.py", f"ckpt_path={ckpt}", "format=torchscript", f"output={out}", "parity_images=100"
    )
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]

    # the same run folder, read by a checkout that has not declared the net (the project as shipped): refused
    proc = cli(ROOT, "eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval2'}")
    assert_one_error_line(proc, "refuses to build `mynets.Tiny`")
    assert not (tmp_path / "eval2").exists()
