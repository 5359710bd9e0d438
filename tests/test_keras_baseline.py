"""benchmarks/keras_baseline.py: the torch side on synthetic data, its refusals, and (where a Python with
TensorFlow is at hand: FMNIST_KERAS_PYTHON, else this one) the Keras side. Smoke tests, not timing checks.

FMNIST_KERAS_PYTHON=~/tfvenv/bin/python python -m pytest tests/test_keras_baseline.py -m slow
"""

import json
import os
import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks import keras_baseline
from tests.helpers import ROOT, assert_one_error_line, run_script

SCRIPT = "benchmarks/keras_baseline.py"
KERAS_PYTHON = os.environ.get("FMNIST_KERAS_PYTHON", sys.executable)


def rows(results):
    return [json.loads(line) for line in results.read_text().splitlines()]


def test_torch_only_synthetic_run_gives_a_bn_gap_row(tmp_path):
    results = tmp_path / "results.jsonl"
    args = ("--synthetic", "--torch-only", "--threads", "1", "--results", str(results))
    # bn_gap at its own batch (--torch-batch), the Keras side keeping the notebook's
    proc = run_script(SCRIPT, *args, "--torch-batch", "16", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = rows(results)
    assert (row["model"], row["path"], row["batch"], row["threads"]) == ("bn_gap", "c", 16, 1)
    assert "batch: bn_gap 16, Keras 32" in proc.stdout
    # --synthetic: 2 windows
    assert row["img_s"] > 0 and len(row["windows_img_s"]) == 2 and row["synthetic"]
    # no Keras side measured: no ratio
    assert "vs_keras" in proc.stdout and "keras_seed004" not in proc.stdout


def test_a_python_without_tensorflow_is_one_error_line_before_any_measurement(tmp_path):
    # this interpreter without its site-packages: never a TensorFlow, whatever the venv holds
    no_tf = tmp_path / "python"
    no_tf.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    no_tf.chmod(0o755)
    results = tmp_path / "results.jsonl"
    for python, message in [(no_tf, "has no TensorFlow"), (tmp_path / "missing", "No such file")]:
        proc = run_script(SCRIPT, "--keras-python", str(python), "--results", str(results), timeout=60)
        assert_one_error_line(proc, message)
        assert "pip install tensorflow-cpu" in proc.stderr and not results.exists()


@pytest.mark.parametrize("folder", ["docs", "benchmarks"])
def test_synthetic_results_are_refused_inside_the_repository(tmp_path, monkeypatch, capsys, folder):
    # a stand-in checkout: were the guard to fail, tmp_path would be written, not the real results
    monkeypatch.setattr(keras_baseline, "ROOT", tmp_path.resolve())
    dest = tmp_path / folder / "results.jsonl"
    dest.parent.mkdir()
    dest.write_text("measured\n")
    with pytest.raises(SystemExit) as e:
        keras_baseline.main(["--synthetic", "--torch-only", "--results", str(dest)])
    assert e.value.code == 2 and "outside docs/ and benchmarks/" in capsys.readouterr().err
    assert dest.read_text() == "measured\n"


@pytest.mark.slow
def test_keras_side_trains_the_ports_cnn_beside_bn_gap(tmp_path):
    if subprocess.run([KERAS_PYTHON, "-c", keras_baseline.HAS_TF], check=False).returncode != 0:
        pytest.skip(f"{KERAS_PYTHON} has no TensorFlow (set FMNIST_KERAS_PYTHON)")
    results = tmp_path / "results.jsonl"
    args = ("--synthetic", "--threads", "1", "--keras-python", KERAS_PYTHON, "--results", str(results))
    proc = run_script(SCRIPT, *args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch_row, keras_row = rows(results)
    assert torch_row["model"] == "bn_gap" and keras_row["model"] == "keras_seed004"
    assert keras_row["img_s"] > 0 and len(keras_row["windows_img_s"]) == 2 and keras_row["batch"] == 32
    # TensorFlow's pools sized as torch's
    assert keras_row["threads"] == torch_row["threads"] == 1
    # the same layers as conf/model/bn_gap.yaml's net: its weights, plus the notebook's conv biases (Keras's
    # default; the port drops them, as BatchNorm's shift makes them redundant)
    port = instantiate(OmegaConf.load(ROOT / "conf" / "model" / "bn_gap.yaml"))
    assert keras_row["trainable_params"] == sum(p.numel() for p in port.parameters()) + 64 + 128 + 256
    assert "keras_seed004  keras  32-true" in proc.stdout and "1.00x" in proc.stdout
