"""predict.py on images written from the (synthetic) test set, and on photo-like files made from the real one."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist_lit.batches import normalize_uint8
from fmnist_lit.calibration import stored_temperature
from fmnist_lit.checkpoint import load_model, read_checkpoint, run_config
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.photo import to_fmnist
from fmnist_lit.predict import main, predict
from fmnist_lit.predictor import load_predictor
from fmnist_lit.synthetic import make_images
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import ROOT, compose_cfg, run_script


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_root):
    out = tmp_path_factory.mktemp("predict_run")
    m = run(compose_cfg(out, tiny_root, ["model=mlp", "logger=csv", "trainer.max_epochs=3"]))
    return m["best_checkpoint"]


def model_of(ckpt: str):
    return load_model(run_config(Path(ckpt))[1], read_checkpoint(Path(ckpt)), Path(ckpt)).eval()


def write_pngs(folder: Path, n: int, seed: int) -> torch.Tensor:
    x, _ = make_images(n, seed)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(x[i].numpy()).save(folder / f"img{i}.png")
    return x


def test_png_roundtrip_is_exact(tmp_path):
    x, _ = make_images(1, 7)
    Image.fromarray(x[0].numpy()).save(tmp_path / "a.png")
    assert torch.equal(to_fmnist(tmp_path / "a.png")[0], x[0])


def test_predictions_match_the_model(tmp_path, trained):
    x = write_pngs(tmp_path, 6, 9)
    rows = predict(trained, [str(tmp_path)])
    with torch.no_grad():
        # the run's temperature, as predict.py applies it
        t = stored_temperature(trained) or 1.0
        probs = (model_of(trained)(normalize_uint8(x)).float() / t).softmax(-1)
    assert [r["class"] for r in rows] == [CLASSES[int(i)] for i in probs.argmax(-1)]
    assert torch.allclose(torch.tensor([r["probs"] for r in rows]), probs, atol=1e-6)
    assert all(0 < r["confidence"] <= 1 and not r["inverted"] for r in rows)


def test_a_bad_file_does_not_stop_the_others(tmp_path, trained, capsys):
    write_pngs(tmp_path, 2, 3)
    # sorted between the two good ones
    (tmp_path / "img1a.png").write_text("not an image")
    assert main([trained, str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "img0.png" in out and "img1.png" in out
    lines = err.strip().splitlines()
    assert lines[-1] == "2 predicted, 1 failed"
    assert [ln for ln in lines if ln.startswith("error:")] == [
        ln for ln in lines if "img1a.png: not a readable image" in ln
    ]
    assert len(lines) == 2


def test_unreadable_file_exits_1_usage_errors_exit_2(tmp_path, trained):
    (tmp_path / "bad.png").write_text("not an image")
    proc = run_script("predict.py", trained, str(tmp_path / "bad.png"), timeout=120)
    assert (
        proc.returncode == 1
        and "bad.png: not a readable image" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert proc.stderr.strip().splitlines()[-1] == "0 predicted, 1 failed"
    assert main([trained, str(tmp_path / "missing.png")]) == 2
    # not a checkpoint
    assert main([str(tmp_path / "bad.png"), str(tmp_path)]) == 2


def test_decompression_bomb_is_one_error_line(tmp_path, trained, capsys, monkeypatch):
    write_pngs(tmp_path, 1, 3)
    Image.new("L", (300, 300), 255).save(tmp_path / "huge.png")
    # 28x28 passes, 300x300 is over twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert main([trained, str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "huge.png: refused as a possible decompression bomb" in err[0]


def test_csv_has_probabilities_and_flags(tmp_path, trained):
    x = write_pngs(tmp_path / "in", 3, 5)
    Image.fromarray(np.kron(255 - x[0].numpy(), np.ones((4, 4), np.uint8))).save(tmp_path / "in" / "neg.png")
    assert (
        main([trained, str(tmp_path / "in"), "--csv", str(tmp_path / "p.csv"), "--min-confidence", "1"]) == 0
    )
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert list(rows[0])[:5] == ["file", "class", "confidence", "low_confidence", "inverted"]
    assert list(rows[0])[5:] == [f"p_{c}" for c in CLASSES]
    for r in rows:
        p = [float(r[f"p_{c}"]) for c in CLASSES]
        assert abs(sum(p) - 1) < 1e-4 and r["class"] == CLASSES[int(np.argmax(p))]
        # the flag follows the threshold
        assert r["low_confidence"] == ("1" if float(r["confidence"]) < 1 else "0")
        assert r["inverted"] == ("1" if r["file"].endswith("neg.png") else "0")
    main([trained, str(tmp_path / "in"), "--csv", str(tmp_path / "q.csv"), "--min-confidence", "0"])
    assert {r["low_confidence"] for r in csv.DictReader((tmp_path / "q.csv").read_text().splitlines())} == {
        "0"
    }
    # argparse's usage error
    with pytest.raises(SystemExit) as e:
        main([trained, str(tmp_path / "in"), "--min-confidence", "1.5"])
    assert e.value.code == 2


def test_save_inputs_writes_what_the_model_received(tmp_path, trained):
    x = write_pngs(tmp_path / "in", 3, 4)
    out = tmp_path / "seen"
    assert main([trained, str(tmp_path / "in"), "--save-inputs", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "0000_img0.png",
        "0001_img1.png",
        "0002_img2.png",
        "mosaic.png",
    ]
    for i in range(3):
        assert np.array_equal(np.asarray(Image.open(out / f"000{i}_img{i}.png")), x[i].numpy())
    assert Image.open(out / "mosaic.png").size[0] > 100
    # never overwritten
    assert main([trained, str(tmp_path / "in"), "--save-inputs", str(out)]) == 2


def test_predict_refuses_onnx_files_not_from_export_py(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", ["input"], ["probabilities"])],
        "g",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 10])],
        [h.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 10])],
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "other.onnx")
    with pytest.raises(UserError, match="not a model written by fmnist-lit's export.py"):
        load_predictor(tmp_path / "other.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load_predictor(tmp_path / "broken.onnx")


@pytest.mark.slow
def test_photo_like_set_accuracy_on_real_data(tmp_path):
    """experiment=fast on the real data (~40 s on 1 thread), then 200 test images as white JPEGs and RGBA cut-outs:
    within 5 points of the 28x28 originals (predict.py before the dataset's conversion: 38% on white JPEGs)."""
    from fmnist_lit import fashion_mnist as D

    from photo_set import write_set

    if not all((ROOT / "data" / "FashionMNIST" / "raw" / n).exists() for n in D.MD5):
        pytest.skip("real Fashion-MNIST not in data/")
    m = run(
        compose_cfg(
            tmp_path / "run",
            ROOT / "data",
            [
                "experiment=fast",
                "logger=csv",
                "threads=1",
                "report.enabled=false",
                "callbacks.progress_bar=null",
            ],
            tiny=False,
        )
    )
    x, y = D.load_split(ROOT / "data", train=False)
    root = write_set(
        x[:200].numpy(), y[:200].numpy(), tmp_path / "set", variants=("original", "white_jpeg", "rgba_png")
    )
    acc = {}
    for v in ("original", "white_jpeg", "rgba_png"):
        rows = predict(m["best_checkpoint"], [str(root / v)])
        acc[v] = np.mean([r["class"] == CLASSES[int(y[int(Path(r["file"]).stem)])] for r in rows])
    assert acc["original"] > 0.85 and min(acc["white_jpeg"], acc["rgba_png"]) > acc["original"] - 0.05, acc
