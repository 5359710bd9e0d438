"""A refused command writes nothing: each mistake below is one `error:` line, exit status 2, and no folder on disk
(no `.hydra/`, no empty log that a leaderboard or `ls -t` would pick up). Also the short name of a run's tested
checkpoint (its folder) and resuming a finished run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import TINY, assert_one_error_line, run_script, train_cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_root) -> Path:
    """A finished tiny mlp run (metrics.json, checkpoints/)."""
    folder = tmp_path_factory.mktemp("finished")
    proc, run = train_cli(folder, tiny_root, "model=mlp", "logger=csv", "report.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def refusals(run: Path, tmp_path: Path, tiny_root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (command line, what the error line says)."""
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07not an onnx file")
    last = run / "checkpoints" / "last.ckpt"
    data = [f"data.root={tiny_root}", *TINY, "logger=csv"]
    # a run from an older version of the code: its net took a setting this one no longer takes
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    cfg = OmegaConf.load(old / "config.yaml")
    cfg.model.net.depth = 3
    OmegaConf.save(cfg, old / "config.yaml")
    return {
        "eval: metrics.json": (
            ["eval.py", f"ckpt_path={run / 'metrics.json'}"],
            "not a readable PyTorch checkpoint",
        ),
        "eval: onnx": (["eval.py", f"ckpt_path={onnx}"], "not a readable PyTorch checkpoint"),
        "eval: foreign": (["eval.py", f"ckpt_path={foreign}"], "not a Lightning checkpoint"),
        "eval: not a run": (["eval.py", f"ckpt_path={tmp_path}"], "not a finished train.py run"),
        "export: tflite": (["export.py", f"ckpt_path={last}", "format=tflite"], "format=tflite"),
        "eval: run older than the code": (
            ["eval.py", str(old)],
            "do not build with this version of the code",
        ),
        "export: run older than the code": (["export.py", str(old)], "do not build with this version"),
        "train: other net": (
            ["train.py", *data, "model=simple_cnn", f"ckpt_path={last}"],
            "weights do not fit",
        ),
        "train: finished": (
            ["train.py", *data, "model=mlp", f"ckpt_path={last}"],
            "nothing is left to train",
        ),
        "train: key the class refuses": (
            ["train.py", *data, "+model.net.depth=3"],
            "unexpected keyword argument 'depth'",
        ),
        "train: BN/bias LR multiplier without an LR": (
            ["train.py", *data, "experiment=speed94", "~scheduler", "~optimizer.lr"],
            "model.bias_lr_mult needs the optimiser's LR",
        ),
    }


CASES = ["eval: metrics.json", "eval: onnx", "eval: foreign", "eval: not a run", "export: tflite"]
CASES += ["train: other net", "train: finished", "train: key the class refuses"]
CASES += ["train: BN/bias LR multiplier without an LR"]
CASES += ["eval: run older than the code", "export: run older than the code"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_refusal_writes_nothing(tmp_path, tiny_root, finished_run, case):
    args, message = refusals(finished_run, tmp_path, tiny_root)[case]
    out = tmp_path / "out"
    before = sorted(p.name for p in finished_run.rglob("*"))
    proc = run_script(*args, f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_error_line(proc, message)
    assert not out.exists() and not (tmp_path / "outputs").exists()
    # the run it was given is untouched
    assert sorted(p.name for p in finished_run.rglob("*")) == before


@pytest.mark.slow
def test_a_run_folder_stands_for_its_tested_checkpoint(tmp_path, finished_run):
    proc = run_script(
        "eval.py", f"ckpt_path={finished_run}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((finished_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert Path(evaluated["best_checkpoint"]).name == Path(trained["best_checkpoint"]).name
    assert evaluated["test_acc"] == trained["test_acc"]


@pytest.mark.slow
def test_the_run_folder_is_the_first_line(tmp_path, tiny_root):
    run = tmp_path / "run"
    proc = run_script(
        "train.py", f"data.root={tiny_root}", *TINY, "model=mlp", "logger=csv", f"hydra.run.dir={run}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the console's first line, before the precision probe or anything Lightning says
    assert f"run folder: {run}" in (proc.stdout + proc.stderr).strip().splitlines()[0]
    log = (run / "train.log").read_text().splitlines()
    first = next(line for line in log if "fmnist_lit" in line)
    assert f"run folder: {run}" in first and "command: python" in log[1]


def test_a_checkpoint_next_to_the_filesystem_root_is_a_user_error():
    """A file with fewer parent folders than `<run>/checkpoints/x.ckpt` (e.g. `model.ckpt` in `/`) stands for the
    folder it is in, where no config.yaml is: one UserError line, not an IndexError."""
    from fmnist_lit.checkpoint import run_config, run_dir_of
    from fmnist_lit.utils import UserError

    assert run_dir_of("/model.ckpt") == Path("/")
    assert run_dir_of("/run/checkpoints/x.ckpt") == Path("/run")
    assert run_dir_of("/run/checkpoints/every_epoch/x.ckpt") == Path("/run")
    with pytest.raises(UserError, match="no /config.yaml"):
        run_config("/model.ckpt")
