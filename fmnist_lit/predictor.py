"""The model predict.py classifies with: uint8 images (N, 28, 28) -> class probabilities (N, 10), from a checkpoint
of a train.py run (with its stored temperature) or from a model file export.py wrote (.onnx).

An exported model takes (N, 1, 28, 28) float32 in [0, 1] (`scaled`), and its metadata name its writer (PRODUCER)
and its class names. export.py writes those, and checks the file it wrote with `onnx_runner`, the reader used here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from fmnist_lit.batches import normalize_uint8
from fmnist_lit.calibration import stored_temperature
from fmnist_lit.checkpoint import load_model, locate, read_checkpoint, run_config
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.utils import UserError

# the `producer` metadata of a model file export.py wrote
PRODUCER = "fmnist-lit export.py"
# uint8 (N, 28, 28) -> (N, 10) probabilities
Predictor = Callable[[torch.Tensor], torch.Tensor]


def scaled(x: torch.Tensor) -> torch.Tensor:
    """An exported model's input: uint8 (N, 28, 28) -> (N, 1, 28, 28) float32 in [0, 1]."""
    return x.unsqueeze(1).float() / 255.0


def onnx_runner(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    """An exported .onnx -> (run: (N, 1, 28, 28) in [0, 1] -> probabilities, its metadata)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{path}: ONNX files need onnxruntime: pip install 'fmnist-lit[export]'") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 (onnxruntime raises its own types for every kind of bad file)
        raise UserError(f"{path}: not a readable ONNX model ({' '.join(str(e).split())[:160]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    return (lambda x: torch.from_numpy(session.run(["probabilities"], {"input": x.numpy()})[0])), meta


def load_predictor(path: str | Path) -> Predictor:
    """predict.py's model: a checkpoint of a train.py run (with its stored temperature) or an exported .onnx."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        run, meta = onnx_runner(path)
        if meta.get("producer") != PRODUCER or meta.get("classes") != json.dumps(CLASSES):
            raise UserError(
                f"{path}: not a model written by fmnist-lit's export.py (no matching class names in "
                "its metadata)"
            )
        return lambda x: run(scaled(x))
    # a run folder stands for the checkpoint its run tested
    path = locate(path)
    ckpt = read_checkpoint(path)
    model = load_model(run_config(path)[1], ckpt, path).eval()
    temperature = stored_temperature(path, ckpt["state_dict"]) or 1.0
    # flip-averaged if tta_flip
    return lambda x: (model.eval_logits(normalize_uint8(x)) / temperature).softmax(-1)
