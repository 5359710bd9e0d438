"""`--help` of train.py, eval.py, export.py and predict.py answers without importing torch or Lightning (seconds):
for the first three the same text Hydra would print, from conf/ alone; for predict.py argparse's. predict.py's usage
mistakes are answered before those imports too, and so are the config typos Hydra finds while composing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

PROBE = (
    "import runpy, sys\n"
    "sys.argv = [{script!r}, *{args!r}]\n"
    "try:\n"
    "    runpy.run_path({script!r}, run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    print('exit', e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
)


def probe(script: str, *args: str) -> subprocess.CompletedProcess:
    """`python <script> <args>` in a process that reports, as its last stdout line, `exit <status> <torch
    imported> <lightning imported>`."""
    code = PROBE.format(script=str(ROOT / script), args=list(args))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("script", "first"), [("train.py", "train.py:"), ("eval.py", "eval.py:"), ("export.py", "export.py:")]
)
def test_help_imports_neither_torch_nor_lightning(script, first):
    proc = probe(script, "--help")
    assert proc.stdout.startswith(first), proc.stdout[:500] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "exit 0 False False", proc.stderr[-2000:]
    assert "== Keys" in proc.stdout or "== Config ==" in proc.stdout


def test_predict_help_imports_neither_torch_nor_lightning():
    proc = probe("predict.py", "--help")
    assert proc.stdout.startswith("usage: predict.py"), proc.stdout[:500] + proc.stderr[-2000:]
    assert "--min-confidence" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == "exit 0 False False", proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: the following arguments are required: ckpt_path, images (usage: predict.py"),
        (("run.ckpt", "a.png", "--bogus"), "error: unrecognized arguments: --bogus (usage: predict.py"),
        (
            ("run.ckpt", "a.png", "--min-confidence", "2"),
            "error: --min-confidence 2.0: must be a probability",
        ),
        (("run.ckpt", "a.png", "--invert", "maybe"), "error: argument --invert: invalid choice: 'maybe'"),
    ],
)
def test_predict_usage_mistake_is_one_error_line_before_torch(args, message):
    proc = probe("predict.py", *args)
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "exit 2 False False", proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ("model=nonexistent",), "error: model=nonexistent"),
        ("train.py", ("trainer.max_epoch=2",), "error: trainer.max_epoch"),
        ("eval.py", ("ckpt_path=x.ckpt", "foo=1"), "error: foo"),
        ("export.py", ("ckpt_path=x.ckpt", "foo=1"), "error: foo"),
    ],
)
def test_config_typos_are_answered_before_torch_is_imported(script, args, message):
    """Hydra composes the config before the task is imported: a typo costs no torch import."""
    proc = probe(script, *args)
    assert proc.stderr.startswith(message), proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "exit 2 False False", proc.stderr[-2000:]
