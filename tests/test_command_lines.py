"""One command-line style for every entry point: eval.py and export.py take a lone checkpoint as well as
`ckpt_path=`, predict.py takes `ckpt_path=` as well as a lone checkpoint; each speaks of its own keys in its help
and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist_lit.arguments import hydra_argv
from fmnist_lit.predict import main as predict_main
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import assert_one_error_line, compose_cfg, run_script

EVAL_KEYS = (
    "accelerator, ckpt_path, data.root, limit_test_batches, report.enabled, report.robustness, threads"
)


def test_a_lone_checkpoint_means_ckpt_path():
    assert hydra_argv("eval.py", "eval", ["run/last.ckpt", "threads=1", "hydra.run.dir=o"]) == [
        "ckpt_path=run/last.ckpt",
        "threads=1",
        "hydra.run.dir=o",
    ]
    assert hydra_argv("export.py", "export", ["ckpt_path=a.ckpt", "format=torchscript"]) == [
        "ckpt_path=a.ckpt",
        "format=torchscript",
    ]
    # Hydra's flags: the command line is Hydra's to read
    assert hydra_argv("eval.py", "eval", ["--help"]) == ["--help"]


def test_a_path_holding_an_equals_sign_is_a_path(tmp_path):
    ckpt = tmp_path / "model=mlp" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.touch()
    assert hydra_argv("eval.py", "eval", [str(ckpt)]) == [f"ckpt_path={ckpt}"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "no checkpoint given; usage: python eval.py ckpt_path=<run>/checkpoints/<file>.ckpt"),
        (["threads=1"], "no checkpoint given; usage:"),
        (["a.ckpt", "b.ckpt"], "a.ckpt b.ckpt: one checkpoint at a time; usage:"),
        (["a.ckpt", "ckpt_path=b.ckpt"], "one checkpoint at a time"),
        # train.py's group and key: eval.py's own keys are named, not Hydra's `+model=mlp`
        (["a.ckpt", "model=mlp"], f"model=mlp: eval.py has no such setting (it takes {EVAL_KEYS}; see"),
        (["a.ckpt", "+trainer.max_epochs=1"], "+trainer.max_epochs=1: eval.py has no such setting"),
    ],
)
def test_eval_command_line_mistakes(argv, message):
    with pytest.raises(UserError) as e:
        hydra_argv("eval.py", "eval", argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_export_names_its_own_keys():
    with pytest.raises(UserError, match=r"model=mlp: export.py has no such setting \(it takes ckpt_path, "):
        hydra_argv("export.py", "export", ["a.ckpt", "model=mlp"])


def test_predict_takes_ckpt_path_as_eval_does(tmp_path, capsys):
    image = tmp_path / "shirt.png"
    image.write_bytes(b"")
    missing = tmp_path / "none.ckpt"
    assert predict_main([f"ckpt_path={missing}", str(image)]) == 2
    assert capsys.readouterr().err == f"error: ckpt_path={missing}: no such file\n"


def test_predict_usage_mistake_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        predict_main([])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: the following arguments are required: ckpt_path")
    assert len(err.splitlines()) == 1 and "(usage: predict.py [-h]" in err


@pytest.mark.slow
@pytest.mark.parametrize("script", ["eval.py", "export.py"])
def test_help_lists_the_scripts_own_keys(script, tmp_path):
    proc = run_script(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ckpt_path: ???" in proc.stdout and "Configuration groups" not in proc.stdout
    assert "\nmodel:" not in proc.stdout and "optimizer" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        ((), "no checkpoint given; usage: python eval.py"),
        (("ckpt_path=x.ckpt", "model=mlp"), "model=mlp: eval.py has no such setting"),
    ],
)
def test_eval_mistakes_are_one_line_and_write_nothing(args, message, tmp_path):
    proc = run_script("eval.py", *args, cwd=tmp_path)
    assert_one_error_line(proc, message)
    assert "+model" not in proc.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_eval_takes_a_lone_checkpoint(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path / "run", tiny_root, ["model=mlp", "logger=csv", "report.enabled=false"]))
    proc = run_script(
        "eval.py",
        m["best_checkpoint"],
        f"data.root={tiny_root}",
        "threads=1",
        "report.enabled=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((Path(tmp_path / "run") / "metrics.json").read_text())
    assert evaluated["test_acc"] == trained["test_acc"]
