"""Every debug mode (conf/debug/*.yaml) and every way of limiting a run runs to the end: metrics.json and the
report describe the images actually tested, and say how many."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_lit.cli import CONF_DIR
from fmnist_lit.train import run
from fmnist_lit.utils import tidy_float
from tests.helpers import compose_cfg, run_script

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
    # metrics.json writes the float32 metric as its shortest decimal (fmnist_lit.utils.tidy_float)
    assert json.loads((out / "metrics.json").read_text())["test_acc"] == tidy_float(metrics["test_acc"])
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
        assert metrics["epochs_run"] == 60
        assert "debug=overfit: train/acc" in caplog.text
    if mode == "profile":
        assert "Action" in (out / "fit-profile.txt").read_text()


def test_overfit_check_fails_a_model_that_cannot_learn(tmp_path, tiny_root):
    from fmnist_lit.utils import UserError

    # an LR so small that nothing moves: 3 batches are not learnt in 3 epochs, and the mode says so in one error
    cfg = compose_cfg(
        tmp_path,
        tiny_root,
        ["debug=overfit", *SMALL, "optimizer.lr=1e-9", "trainer.max_epochs=3"],
        tiny=False,
    )
    with pytest.raises(UserError, match=r"debug=overfit: train/acc 0\.\d+ < 0\.99"):
        run(cfg)


@pytest.mark.parametrize(
    "limit",
    ["++trainer.fast_dev_run=true", "trainer.limit_test_batches=3", "trainer.limit_test_batches=0.25"],
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


def test_importing_the_package_is_enough_to_compose_and_build_a_trainer(tmp_path):
    """As lightning-hydra-template's tests and a notebook do: compose conf/, instantiate cfg.trainer. The
    `auto_precision` resolver must come with `import fmnist_lit`, not with whichever module happens to be imported."""
    code = (
        "import fmnist_lit\n"
        "from hydra import compose, initialize_config_dir\n"
        "from hydra.utils import instantiate\n"
        "from fmnist_lit.cli import CONF_DIR\n"
        "with initialize_config_dir(config_dir=CONF_DIR, version_base='1.3'):\n"
        f"    cfg = compose('train', overrides=['trainer.default_root_dir={tmp_path}', '~trainer.plugins'])\n"
        "print(instantiate(cfg.trainer).precision)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.split()[-1] in ("32-true", "bf16-mixed"), proc.stderr[-2000:]


@pytest.mark.slow
def test_a_sweep_with_a_limited_test_set(tmp_path, tiny_root):
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py", "-m", f"data.root={tiny_root}", *SMALL, "trainer.max_epochs=1", "report.enabled=false",
        "++trainer.limit_test_batches=0.25", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["test_images"] == 50
    assert (sweep / "leaderboard.md").is_file()


@pytest.mark.slow
def test_fast_dev_run_from_the_command_line(tmp_path, tiny_root):
    run = tmp_path / "run"
    proc = run_script(
        "train.py",
        f"data.root={tiny_root}",
        *SMALL,
        "++trainer.fast_dev_run=true",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run / "checkpoints").exists() and (run / "report" / "report.md").is_file()


def test_overfit_batches_are_the_same_every_epoch(tmp_path, tiny_root):
    """Lightning makes a DataLoader sequential under overfit_batches; the in-memory batches must follow, or
    debug=overfit would see new images every epoch and never learn its few batches by heart."""
    from types import SimpleNamespace

    import torch

    from tests.helpers import make_datamodule

    dm = make_datamodule(tiny_root, tmp_path)
    dm.setup()
    dm.trainer = SimpleNamespace(
        overfit_batches=3,
        current_epoch=0,
        global_rank=0,
        world_size=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    first = [y for _, y in dm.train_dataloader()][:3]
    dm.trainer.current_epoch = 1
    again = [y for _, y in dm.train_dataloader()][:3]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
