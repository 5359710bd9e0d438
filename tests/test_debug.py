"""Every debug mode (conf/debug/*.yaml) and every way of limiting a run runs to the end: metrics.json and the
report describe the images actually tested, and say how many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist_lit.cli import CONF_DIR
from fmnist_lit.train import run
from tests.conftest import compose_cfg, run_script

MODES = sorted(p.stem for p in (Path(CONF_DIR) / "debug").glob("*.yaml"))
# tiny data, but none of conftest.TINY's trainer settings: each mode's own must apply
SMALL = [
    "data.val_size=100",
    "data.batch_size=32",
    "data.eval_batch_size=50",
    "data.check_md5=false",
    "data.download=false",
    "model=mlp",
    "threads=1",
    # the TensorBoard figures drawn every epoch cost ~1 s each: not what these tests are about
    "callbacks.report=null",
]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_every_mode_is_tested():
    assert {"fdr", "limit", "overfit", "profile"} <= set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_debug_mode_runs(tmp_path, tiny_root, mode, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "run"
    metrics = run(compose_cfg(out, tiny_root, [f"debug={mode}", *SMALL], tiny=False))
    written = files(out)
    assert json.loads((out / "metrics.json").read_text())["test_acc"] == metrics["test_acc"]
    # metrics, report and predictions describe the same images
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"]
    tested = metrics["test_images"]
    if mode == "fdr":
        # one batch through everything, the report included; no checkpoint or log files
        assert tested == 50 and "report/report.md" in written
        assert not any(f.startswith(("checkpoints/", "csv/", "tensorboard/")) for f in written), written
        assert metrics["best_checkpoint"] is None and metrics["cut_short"] == {"fast_dev_run": True}
        assert "50 of its 200 images" in (out / "report" / "report.md").read_text()
    if mode == "limit":
        assert tested == 100 and metrics["epochs_run"] == 2
    if mode == "overfit":
        # OverfitCheck would have stopped the run below 0.99; the curve says it too
        assert metrics["epochs_run"] == 30
        assert "debug=overfit: train/acc" in caplog.text
    if mode == "profile":
        assert "Action" in (out / "fit-profile.txt").read_text()


def test_overfit_check_fails_a_model_that_cannot_learn(tmp_path, tiny_root):
    from fmnist_lit.utils import UserError

    # an LR so small that nothing moves: 3 batches are not learnt in 3 epochs, and the mode says so in one error
    cfg = compose_cfg(tmp_path, tiny_root, ["debug=overfit", *SMALL, "optimizer.lr=1e-9", "trainer.max_epochs=3"], tiny=False)
    with pytest.raises(UserError, match=r"debug=overfit: train/acc 0\.\d+ < 0\.99"):
        run(cfg)


@pytest.mark.parametrize(
    "limit", ["++trainer.fast_dev_run=true", "trainer.limit_test_batches=3", "trainer.limit_test_batches=0.25"]
)
def test_limited_test_set(tmp_path, tiny_root, limit):
    cfg = compose_cfg(
        tmp_path, tiny_root, [*SMALL, "trainer.max_epochs=1", "report.enabled=false", limit], tiny=False
    )
    metrics = run(cfg)
    expected = {"++trainer.fast_dev_run=true": 50, "trainer.limit_test_batches=3": 150}.get(limit, 50)
    assert metrics["test_images"] == expected and metrics["test_images_total"] == 200


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_debug_mode_on_the_real_data(tmp_path, mode):
    """`python train.py debug=<mode>` as a user types it, on the real data (Debian's copy)."""
    proc = run_script(
        "train.py", f"debug={mode}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
