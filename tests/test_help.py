"""`--help` of train.py, eval.py and export.py answers without importing torch or Lightning (seconds): the same
text Hydra would print, from conf/ alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

PROBE = (
    "import runpy, sys\n"
    "sys.argv = [{script!r}, '--help']\n"
    "try:\n"
    "    runpy.run_path({script!r}, run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    print('exit', e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
)


@pytest.mark.parametrize(
    ("script", "first"), [("train.py", "train.py:"), ("eval.py", "eval.py:"), ("export.py", "export.py:")]
)
def test_help_imports_neither_torch_nor_lightning(script, first):
    code = PROBE.format(script=str(ROOT / script))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert proc.stdout.startswith(first), proc.stdout[:500] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "exit 0 False False", proc.stderr[-2000:]
    assert "== Keys" in proc.stdout or "== Config ==" in proc.stdout
