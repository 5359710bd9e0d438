"""The corruption sweep (fmnist_lit/robustness.py): deterministic uint8 corruptions, and the report's table."""

from __future__ import annotations

import itertools

import pytest
import torch

from fmnist_lit.evaluate import evaluate
from fmnist_lit.robustness import CORRUPTIONS, _warp, corrupt
from fmnist_lit.synthetic import make_images
from fmnist_lit.train import run
from tests.helpers import compose_cfg, eval_cfg

# uint8 (64, 28, 28)
X = make_images(64, 3)[0]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_are_deterministic_uint8_and_grow_with_severity(name):
    levels = range(1, len(CORRUPTIONS[name][1]) + 1)
    out = [corrupt(X, name, s) for s in levels]
    for s, y in zip(levels, out):
        assert y.dtype == torch.uint8 and y.shape == X.shape
        # seeded: the same images every time
        assert torch.equal(y, corrupt(X, name, s))
    change = [(y.float() - X.float()).abs().mean() for y in out]
    # severity 1 already changes the images
    assert change[0] > 0.5
    # and each severity more than the last
    assert all(a < b for a, b in itertools.pairwise(change)), change


def test_inversion_is_exact():
    assert torch.equal(corrupt(X, "inversion", 1), 255 - X)


def test_integer_shift_moves_pixels_exactly():
    want = torch.zeros_like(X)
    # down 3, left 2, zero fill
    want[:, 3:, :26] = X[:, :25, 2:]
    n = len(X)
    assert torch.equal(_warp(X, torch.zeros(n), torch.full((n,), -2.0), torch.full((n,), 3.0)), want)


def test_corruptions_in_the_run_report(tmp_path, tiny_root):
    m = run(
        compose_cfg(
            tmp_path, tiny_root, ["model=mlp", "logger=csv", "trainer.max_epochs=1", "report.robustness=true"]
        )
    )
    r = m["robustness"]
    # the clean pass is the test set
    assert r["clean"] == pytest.approx(m["test_acc"], abs=1e-6)
    assert set(r["accuracy"]) == set(CORRUPTIONS) and len(r["accuracy"]["jpeg"]) == 3
    assert r["accuracy"]["inversion"]["1"] < r["clean"]
    page = (tmp_path / "report" / "report.md").read_text()
    assert (
        "| corruption | severity 1 | severity 2 | severity 3 |" in page
        and "![robustness](robustness.png)" in page
    )
    assert f"| gaussian noise | {r['accuracy']['gaussian_noise']['1']:.4f} (8) |" in page
    assert (tmp_path / "report" / "robustness.png").is_file()


@pytest.mark.slow
def test_corruptions_through_eval_of_a_run_without_it(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path / "run", tiny_root, ["model=mlp", "logger=csv", "trainer.max_epochs=1"]))
    assert "robustness" not in m and not (tmp_path / "run" / "report" / "robustness.png").exists()
    assert (
        "Not computed: add `report.robustness=true`"
        in (tmp_path / "run" / "report" / "report.md").read_text()
    )
    cfg = eval_cfg(tmp_path, tiny_root, m["best_checkpoint"])
    cfg.report.robustness = True
    r = evaluate(cfg)["robustness"]
    assert (
        set(r["accuracy"]) == set(CORRUPTIONS) and (tmp_path / "out" / "report" / "robustness.png").is_file()
    )
