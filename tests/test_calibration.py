"""Temperature scaling (fmnist_lit/calibration.py): the fit, ECE, and a run's T stored, reported and applied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import multiclass_calibration_error

from fmnist_lit.batches import normalize_uint8
from fmnist_lit.calibration import (
    apply_temperature,
    fit_temperature,
    predict_logits,
    reliability,
    scores,
    stored_temperature,
)
from fmnist_lit.checkpoint import load_model, read_checkpoint, run_config
from fmnist_lit.evaluate import evaluate
from fmnist_lit.predict import predict
from fmnist_lit.synthetic import make_images
from fmnist_lit.train import run
from tests.helpers import compose_cfg, eval_cfg, make_datamodule

# fp32 so that the test can recompute the run's logits exactly; noise 3x the tiny set's: not 100% accurate
RUN = ["model=mlp", "logger=csv", "trainer.max_epochs=1", "trainer.precision=32-true", "seed=0"]


def test_fit_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 10, generator=g)
    # labels drawn at T = 2.5
    target = torch.multinomial((logits / 2.5).softmax(-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, target) == pytest.approx(2.5, rel=0.03)
    assert fit_temperature(logits / 2.5, target) == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 2.5, 20.0])
def test_temperature_never_changes_the_predicted_class(t):
    logits = 4 * torch.randn(5_000, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(apply_temperature(logits, t).argmax(1), logits.argmax(1))


def test_reliability_bins_give_torchmetrics_ece():
    g = torch.Generator().manual_seed(2)
    probs = (2 * torch.randn(3_000, 10, generator=g)).softmax(-1)
    target = torch.randint(0, 10, (3_000,), generator=g)
    b = reliability(probs, target)
    n = sum(b["count"])
    ece = sum(c / n * abs(a - m) for c, a, m in zip(b["count"], b["accuracy"], b["confidence"]) if c)
    assert n == 3_000 and ece == pytest.approx(
        float(multiclass_calibration_error(probs, target, 10, n_bins=15))
    )


def test_other_images_are_predicted_as_the_test_set_is(tmp_path, tiny_root):
    """Through the DataModule's loader and per-batch normalisation, bit for bit, the DataModule left as it was."""
    import lightning as L
    from hydra.utils import instantiate

    cfg = compose_cfg(tmp_path, tiny_root, RUN)
    dm, model = instantiate(cfg.data), instantiate(cfg.model)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    test = torch.cat(trainer.predict(model, datamodule=dm))
    state = dict(vars(dm))
    assert torch.equal(predict_logits(trainer, model, dm, dm.test_x, dm.test_y), test)
    with torch.no_grad():
        val = model.eval()(normalize_uint8(dm.val_x))
    assert torch.equal(predict_logits(trainer, model, dm, dm.val_x, dm.val_y), val)
    assert vars(dm).keys() == state.keys() and all(vars(dm)[k] is v for k, v in state.items())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_root) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("calibrated_run")
    return out, run(compose_cfg(out, tiny_root, RUN))


def test_run_fits_temperature_on_validation_only(trained, tmp_path, tiny_root):
    run_dir, m = trained
    c, ckpt = m["calibration"], Path(m["best_checkpoint"])
    stored = json.loads((ckpt.parent / "calibration.json").read_text())
    assert stored["checkpoint"] == ckpt.name and stored["temperature"] == c["temperature"] != 1.0
    assert (
        stored_temperature(ckpt) == c["temperature"] and stored_temperature(ckpt.parent / "last.ckpt") is None
    )

    model = load_model(run_config(ckpt)[1], read_checkpoint(ckpt), ckpt).eval()
    dm = make_datamodule(tiny_root, tmp_path)
    dm.setup()
    with torch.no_grad():
        val_logits, test_logits = (model(normalize_uint8(x)) for x in (dm.val_x, dm.test_x))
    assert c["val_images"] == 100
    # the val split's T
    assert c["temperature"] == pytest.approx(fit_temperature(val_logits, dm.val_y), rel=1e-4)
    # not the test's
    assert c["temperature"] != pytest.approx(fit_temperature(test_logits, dm.test_y), rel=1e-3)
    before, after = scores(test_logits, dm.test_y, 1.0), scores(test_logits, dm.test_y, c["temperature"])
    assert (c["test_ece_before"], c["test_nll_before"]) == pytest.approx(
        (before["ece"], before["nll"]), abs=1e-5
    )
    assert (c["test_ece_after"], c["test_nll_after"]) == pytest.approx((after["ece"], after["nll"]), abs=1e-5)
    # the report's per-class numbers come from the calibrated probabilities: same argmax as trainer.test's
    cm = torch.tensor(m["confusion_matrix"])
    assert float(cm.trace() / cm.sum()) == pytest.approx(m["test_acc"], abs=1e-6)
    page = (run_dir / "report" / "report.md").read_text()
    assert (
        "## Calibration" in page
        and f"| expected calibration error (15 bins) | {c['test_ece_before']:.4f} |" in page
    )
    assert (run_dir / "report" / "reliability.png").is_file()
    # opt-in
    assert "robustness" not in m and "Not computed: add `report.robustness=true`" in page


def test_eval_and_predict_apply_the_stored_temperature(trained, tmp_path, tiny_root):
    _, m = trained
    ckpt, t = Path(m["best_checkpoint"]), m["calibration"]["temperature"]
    e = evaluate(eval_cfg(tmp_path, tiny_root, ckpt))
    assert e["calibration"]["fitted_on"].startswith("stored") and e["calibration"]["temperature"] == t
    assert e["calibration"]["test_ece_after"] == pytest.approx(m["calibration"]["test_ece_after"], abs=1e-6)

    x, _ = make_images(5, 11)
    for i in range(5):
        Image.fromarray(x[i].numpy()).save(tmp_path / f"{i}.png")
    rows = predict(ckpt, [str(tmp_path)])
    model = load_model(run_config(ckpt)[1], read_checkpoint(ckpt), ckpt).eval()
    with torch.no_grad():
        want = (model(normalize_uint8(x)) / t).softmax(-1)
    assert [r["confidence"] for r in rows] == pytest.approx(want.max(1).values.tolist(), abs=1e-6)


def test_no_validation_split_means_no_temperature(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path, tiny_root, [*RUN, "data.val_size=0"]))
    c = m["calibration"]
    assert c["temperature"] == 1.0 and c["fitted_on"] is None and c["test_ece_before"] == c["test_ece_after"]
    assert not (tmp_path / "checkpoints" / "calibration.json").exists()
    assert (
        "No validation split (`data.val_size=0`): no temperature was fitted (T = 1)"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_a_checkpoint_with_the_same_weights_gets_the_run_temperature(trained, tmp_path, caplog):
    """last.ckpt (or a copy) that holds the calibrated weights gets T; other weights get T = 1 and a warning."""
    _, m = trained
    best = Path(m["best_checkpoint"])
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    same = best.parent / "same-weights.ckpt"
    try:
        shutil.copy(best, same)
        assert stored_temperature(same, state) == m["calibration"]["temperature"]
        other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
        assert stored_temperature(same, other) is None
        assert "holds other weights" in caplog.text and "uncalibrated" in caplog.text
    finally:
        same.unlink()
