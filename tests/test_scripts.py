"""Every script in scripts/ and benchmarks/ imports and answers `--help`: found by globbing, so a new script is
checked without being listed here."""

import runpy
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_script

SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]
    if p.name != "__init__.py"
)


def run_as_main(script: str, *args: str, monkeypatch) -> int:
    """Exit status of `python <script> args`, run in this process."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *args])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return e.value.code


def test_the_glob_finds_the_scripts():
    assert {"scripts/photo_accuracy.py", "benchmarks/throughput.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_in_process(script, monkeypatch, capsys):
    """The script run as `__main__` with `--help` in this process: its imports (torch is already loaded, so this
    is fast) and its argument parser. scripts/ is on the import path as a script's own folder is (pyproject)."""
    assert run_as_main(script, "--help", monkeypatch=monkeypatch) == 0
    assert capsys.readouterr().out.startswith(f"usage: {Path(script).name}")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_as_a_user_runs_it(script, tmp_path):
    """`python <script> --help` from another folder, in a fresh interpreter (about 3-7 s each: imports)."""
    proc = run_script(script, "--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {Path(script).name}")


def test_plot_resnet_epochs_draws_the_csv_and_refuses_a_foreign_one(tmp_path, monkeypatch, capsys):
    script = "scripts/plot_resnet_epochs.py"
    good, bad, png = tmp_path / "epochs.csv", tmp_path / "other.csv", tmp_path / "fig" / "acc.png"
    good.write_text(
        "recipe,seed,timing,epoch,s_from_launch,val_acc,test_acc\n"
        "resnet,0,plain,2,120,0.93,0.94\nresnet,0,plain,1,60,0.90,0.91\n"
    )
    assert run_as_main(script, "--csv", str(good), "--out", str(png), monkeypatch=monkeypatch) == 0
    assert png.stat().st_size > 0 and "1 runs" in capsys.readouterr().out

    bad.write_text("epoch,test_acc\n1,0.9\n")
    png.unlink()
    assert run_as_main(script, "--csv", str(bad), "--out", str(png), monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "s_from_launch" in err and not png.exists()
