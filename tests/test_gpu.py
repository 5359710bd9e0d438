"""One CUDA GPU, bf16: train, eval, predict, export, exact resume and the speed recipes on the real data, as a user
runs them (`make test-gpu`, a few minutes on one GPU). Skipped where torch sees no CUDA GPU.

The speed recipes' figures (test accuracy, wall seconds) are printed here; the rows docs/RESULTS.md reports come
from `python benchmarks/speedrun.py experiment=<recipe> --runs 5 trainer=gpu`, which appends them to
benchmarks/results.jsonl."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, run_script
from tests.test_resume import KILL, RUN

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"),
]
GPU = ["trainer=gpu", "trainer.precision=bf16-mixed", "data.root=data"]


def train(run_dir: Path, *overrides: str):
    proc = run_script("train.py", *GPU, f"hydra.run.dir={run_dir}", *overrides, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_train_eval_predict_export(tmp_path):
    metrics = train(tmp_path / "run", "experiment=fast")
    assert metrics["test_acc"] > 0.88 and metrics["precision"] == "bf16-mixed"
    proc = run_script("eval.py", str(tmp_path / "run"), "accelerator=gpu", f"hydra.run.dir={tmp_path / 'ev'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test_acc"] == pytest.approx(
        metrics["test_acc"], abs=2e-4
    )
    # a grey square on black: any class will do, the command must run
    Image.fromarray(np.pad(np.full((14, 14), 200, np.uint8), 7)).save(tmp_path / "item.png")
    proc = run_script("predict.py", str(tmp_path / "run"), str(tmp_path / "item.png"))
    assert proc.returncode == 0 and "item.png" in proc.stdout, proc.stderr[-3000:]
    proc = run_script("export.py", str(tmp_path / "run"), f"hydra.run.dir={tmp_path / 'ex'}")
    assert proc.returncode == 0 and (tmp_path / "ex" / "model.onnx").is_file(), proc.stderr[-3000:]


def test_kill_and_resume_is_exact_on_the_gpu(tmp_path):
    # deterministic kernels where CUDA has them (warn elsewhere: max-pool's backward uses atomics)
    common = [*RUN, "data.augment_flip=alternate", "trainer.deterministic=warn", "trainer.max_epochs=2"]
    whole = train(tmp_path / "whole", *common)
    proc = run_script(
        "train.py",
        *GPU,
        *common,
        KILL % "step: 500",
        f"hydra.run.dir={tmp_path / 'killed'}",
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed = train(tmp_path / "resumed", *common, f"ckpt_path={last}")
    assert resumed["global_steps"] == whole["global_steps"] and resumed["epochs_run"] == whole["epochs_run"]
    # the same data order and RNG draws; only the atomics' summation order may differ
    assert resumed["test_acc"] == pytest.approx(whole["test_acc"], abs=0.005)


@pytest.mark.parametrize("recipe", ["speed94", "speed95"])
def test_speed_recipes(tmp_path, recipe):
    results = tmp_path / "results.jsonl"
    args = [f"experiment={recipe}", "--runs", "1", "--results", str(results), *GPU]
    proc = run_script("benchmarks/speedrun.py", *args, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["gpu"] and row["precision"] == "bf16-mixed"
    assert row["test_acc"] > {"speed94": 0.93, "speed95": 0.94}[recipe]
