"""predict.py on images written from the (synthetic) test set."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

from fmnist_lit.data import CLASSES, normalize_uint8
from fmnist_lit.predict import main, predict, to_fmnist
from fmnist_lit.train import run
from tests.conftest import ROOT, compose_cfg, make_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("predict_run")
    m = run(compose_cfg(out, tiny_root, ["model=mlp", "logger=csv", "trainer.max_epochs=3"]))
    return m["best_checkpoint"]


def test_png_roundtrip_is_exact(tmp_path):
    x, _ = make_images(1, 7)
    Image.fromarray(x[0].numpy()).save(tmp_path / "a.png")
    assert torch.equal(to_fmnist(tmp_path / "a.png"), x[0])


def test_dark_on_light_photo_is_inverted(tmp_path):
    x, _ = make_images(1, 7)
    Image.fromarray(255 - x[0].numpy()).resize((112, 112)).save(tmp_path / "photo.jpg")
    y = to_fmnist(tmp_path / "photo.jpg").float()
    assert (y - x[0].float()).abs().mean() < 40  # inverted back, up to resampling and JPEG loss


def test_predictions_match_the_model(tmp_path, trained):
    from pathlib import Path

    from fmnist_lit.evaluate import load_model, read_checkpoint, run_config
    x, _ = make_images(6, 9)
    for i in range(6):
        Image.fromarray(x[i].numpy()).save(tmp_path / f"img{i}.png")
    rows = predict(trained, [str(tmp_path)])
    model = load_model(run_config(Path(trained))[1], read_checkpoint(Path(trained)), Path(trained)).eval()
    with torch.no_grad():
        want = model(normalize_uint8(x)).argmax(-1)
    assert [r["class"] for r in rows] == [CLASSES[int(i)] for i in want]
    assert all(0 < r["confidence"] <= 1 for r in rows)


def test_cli_writes_csv_and_reports_bad_input(tmp_path, trained):
    Image.fromarray(make_images(1, 3)[0][0].numpy()).save(tmp_path / "ok.png")
    assert main([trained, str(tmp_path / "ok.png"), "--csv", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().startswith("file,class,confidence")
    (tmp_path / "bad.png").write_text("not an image")
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), trained, str(tmp_path / "bad.png")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "bad.png: not a readable image" in proc.stderr and "Traceback" not in proc.stderr
    assert main([trained, str(tmp_path / "missing.png")]) == 2
