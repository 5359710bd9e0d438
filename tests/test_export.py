"""export.py (fmnist_lit/export.py): ONNX and TorchScript from a tiny trained model, parity, metadata, predict.py on
the .onnx, and refusals (foreign or tampered checkpoints, foreign ONNX files, existing outputs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fmnist_lit import export as ex
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.predict import predict
from fmnist_lit.predictor import PRODUCER, onnx_runner
from fmnist_lit.synthetic import make_images
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import compose_cfg, run_script

RUN = ["model=simple_cnn", "logger=csv", "trainer.max_epochs=1", "seed=0"]


class Payload:
    """Pickles as a call to `touch path`: what a malicious checkpoint would carry."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_root) -> Path:
    out = tmp_path_factory.mktemp("export_run")
    return Path(run(compose_cfg(out, tiny_root, RUN))["best_checkpoint"])


def export_cfg(ckpt: Path, root: Path, out: Path, fmt: str, **extra):
    return OmegaConf.create(
        {
            "ckpt_path": str(ckpt),
            "format": fmt,
            "output": str(out),
            "parity_images": 150,
            "data": {"root": str(root)},
            "threads": 1,
            "paths": {"output_dir": str(out.parent)},
            **extra,
        }
    )


def test_torchscript_export_parity_and_metadata(ckpt, tmp_path, tiny_root, capsys):
    res = ex.export(export_cfg(ckpt, tiny_root, tmp_path / "m.pt", "torchscript"))
    assert res["same_argmax"] == res["images"] == 150 and res["max_abs_diff"] < ex.PARITY_ATOL
    assert "parity on 150 test images: argmax equal for 150/150" in capsys.readouterr().out
    run_ts, meta = ex.torchscript_runner(tmp_path / "m.pt")
    assert json.loads(meta["classes"]) == CLASSES and float(meta["temperature"]) == res["temperature"] != 1.0
    # any batch size
    for n in (1, 7):
        assert run_ts(torch.rand(n, 1, 28, 28)).shape == (n, 10)


def test_onnx_export_parity_and_predict_gives_the_checkpoints_classes(ckpt, tmp_path, tiny_root):
    pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")
    res = ex.export(export_cfg(ckpt, tiny_root, tmp_path / "m.onnx", "onnx"))
    assert res["same_argmax"] == res["images"] and res["max_abs_diff"] < ex.PARITY_ATOL
    run_onnx, meta = onnx_runner(tmp_path / "m.onnx")
    assert meta["producer"] == PRODUCER and float(meta["temperature"]) == res["temperature"]
    assert run_onnx(torch.rand(3, 1, 28, 28)).shape == (3, 10)

    x, _ = make_images(12, 21)
    for i in range(12):
        Image.fromarray(x[i].numpy()).save(tmp_path / f"{i:02d}.png")
    from_ckpt, from_onnx = predict(ckpt, [str(tmp_path)]), predict(tmp_path / "m.onnx", [str(tmp_path)])
    assert [r["class"] for r in from_onnx] == [r["class"] for r in from_ckpt]
    assert [r["confidence"] for r in from_onnx] == pytest.approx(
        [r["confidence"] for r in from_ckpt], abs=1e-4
    )


def test_failed_parity_is_an_error_and_leaves_no_file(ckpt, tmp_path, tiny_root, monkeypatch):
    # no export can be closer than 0
    monkeypatch.setattr(ex, "PARITY_ATOL", 0.0)
    with pytest.raises(UserError, match="failed its parity check"):
        ex.export(export_cfg(ckpt, tiny_root, tmp_path / "m.pt", "torchscript"))
    assert list(tmp_path.iterdir()) == []


def test_refusals(ckpt, tmp_path, tiny_root):
    (tmp_path / "taken.pt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        ex.export(export_cfg(ckpt, tiny_root, tmp_path / "taken.pt", "torchscript"))
    assert (tmp_path / "taken.pt").read_text() == "mine"
    with pytest.raises(UserError, match="format=tflite: choose onnx or torchscript"):
        ex.export(export_cfg(ckpt, tiny_root, tmp_path / "m.tflite", "tflite"))

    # tampered checkpoints in the run folder: one whose pickle would run a command when loaded, one cut short
    run_dir = tmp_path / "tampered"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text((ckpt.parent.parent / "config.yaml").read_text())
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "callbacks": Payload(tmp_path / "pwned")}, run_dir / "checkpoints" / "evil.ckpt")
    (run_dir / "checkpoints" / "cut.ckpt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for name in ("evil.ckpt", "cut.ckpt"):
        with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
            ex.export(export_cfg(run_dir / "checkpoints" / name, tiny_root, tmp_path / "a.pt", "torchscript"))
    # weights_only loading never ran the payload
    assert not (tmp_path / "pwned").exists()

    # another project's run: its config names a class outside this project
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    cfg = OmegaConf.load(ckpt.parent.parent / "config.yaml")
    cfg.model.net = {"_target_": "torchvision.models.resnet18"}
    OmegaConf.save(cfg, other / "config.yaml")
    torch.save({"state_dict": {}}, other / "checkpoints" / "x.ckpt")
    with pytest.raises(UserError, match="refuses to build `torchvision.models.resnet18`"):
        ex.export(export_cfg(other / "checkpoints" / "x.ckpt", tiny_root, tmp_path / "b.pt", "torchscript"))
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


@pytest.mark.slow
def test_cli_export_then_predict(ckpt, tmp_path, tiny_root):
    pytest.importorskip("onnxruntime")
    args = ("format=onnx", f"data.root={tiny_root}", "threads=1")
    proc = run_script(
        "export.py", f"ckpt_path={ckpt}", *args, f"hydra.run.dir={tmp_path / 'exp'}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parity on 200 test images: argmax equal for 200/200" in proc.stdout
    Image.fromarray(make_images(1, 4)[0][0].numpy()).save(tmp_path / "a.png")
    outs = []
    for model in (ckpt, tmp_path / "exp" / "model.onnx"):
        proc = run_script("predict.py", str(model), str(tmp_path / "a.png"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(proc.stdout)
    # the same class
    assert outs[0].split()[1] == outs[1].split()[1]
    proc = run_script(
        "export.py", f"ckpt_path={tmp_path / 'none.ckpt'}", f"hydra.run.dir={tmp_path / 'e2'}", cwd=tmp_path
    )
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"error: ckpt_path={tmp_path / 'none.ckpt'}: no such file"
    )
