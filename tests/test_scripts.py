"""Every script in scripts/ and benchmarks/ imports and answers `--help`: found by globbing, so a new script is
checked without being listed here."""

import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_script

SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]
    if p.name != "__init__.py"
)


def test_the_glob_finds_the_scripts():
    assert {"scripts/photo_accuracy.py", "benchmarks/throughput.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_in_process(script, monkeypatch, capsys):
    """The script run as `__main__` with `--help` in this process: its imports (torch is already loaded, so this
    is fast) and its argument parser. scripts/ is on the import path as a script's own folder is (pyproject)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {Path(script).name}")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_as_a_user_runs_it(script, tmp_path):
    """`python <script> --help` from another folder, in a fresh interpreter (about 3-7 s each: imports)."""
    proc = run_script(script, "--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {Path(script).name}")
