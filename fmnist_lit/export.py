"""export.py: a checkpoint -> a self-contained ONNX or TorchScript model, checked against the checkpoint.

    python export.py ckpt_path=outputs/<date>/<time>/checkpoints/<best>.ckpt format=onnx   # or torchscript

The exported model takes (N, 1, 28, 28) float32 in [0, 1] (pixel / 255; a light garment on a black background,
as Fashion-MNIST), any N. The normalisation (x - MEAN) / STD is the model's first operation, so callers scale to
[0, 1] and nothing else. Outputs: `logits` (N, 10) and `probabilities` (N, 10) = softmax(logits / T), T being the
temperature stored with the run (fmnist_lit.calibration; 1 if none). Metadata (ONNX metadata_props; TorchScript
extra file `metadata.json`): class names, temperature, input and output description, source checkpoint.

Before the file gets its final name, the first `parity_images` official test images go through it and through the
checkpoint's own fp32 forward pass: every argmax must agree and probabilities differ by less than PARITY_ATOL,
else the export is an error and the file is removed. An existing output file is never overwritten. An .onnx file
is read back as predict.py reads it (fmnist_lit/predictor.py).
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from fmnist_lit.batches import MEAN, STD, normalize_uint8
from fmnist_lit.calibration import stored_temperature
from fmnist_lit.checkpoint import build_from_run, load_model, locate, read_checkpoint, run_config
from fmnist_lit.cli import exit_on_user_error, set_threads
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.predictor import PRODUCER, onnx_runner, scaled
from fmnist_lit.utils import UserError

log = logging.getLogger(__name__)
# max |probability difference| allowed between the exported model and the checkpoint (fp32)
PARITY_ATOL = 1e-4
INPUT = "(N, 1, 28, 28) float32 in [0, 1] (pixel / 255), light garment on black; normalisation is inside"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class Exported(nn.Module):
    """The net with the input scaling in front and the temperature behind it."""

    def __init__(self, net: nn.Module, temperature: float):
        super().__init__()
        # a plain fp32 copy in the default memory format (channels_last would put transposes into the graph)
        self.net = copy.deepcopy(getattr(net, "_orig_mod", net)).float().cpu().eval()
        self.net.to(memory_format=torch.contiguous_format)
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (N, 1, 28, 28) in [0, 1] -> (N, 10)
        logits = self.net((x - MEAN) / STD)
        return logits, (logits / self.temperature).softmax(-1)


def write_onnx(model: Exported, path: Path, meta: dict[str, str]) -> None:
    # their INFO lines on each optimisation pass
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # the exporter's notes on torch.export internals
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.rand(2, 1, 28, 28),),
            dynamo=True,
            verbose=False,
            input_names=["input"],
            output_names=["logits", "probabilities"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    program.model.metadata_props.update(meta)
    # one file: the weights inside
    program.save(path, external_data=False)


def write_torchscript(model: Exported, path: Path, meta: dict[str, str]) -> None:
    with warnings.catch_warnings():
        # torch.jit's deprecation notices
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(model, torch.rand(2, 1, 28, 28))
        torch.jit.save(scripted, str(path), _extra_files={"metadata.json": json.dumps(meta)})


def torchscript_runner(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    extra = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return (lambda x: module(x)[1]), json.loads(extra["metadata.json"])


def parity(
    run: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    images: torch.Tensor,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The exported model on uint8 images (N, 28, 28), in batches of several sizes, against reference (N, 10)."""
    with torch.no_grad():
        probs = torch.cat(
            [run(scaled(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        )
    same = int((probs.argmax(1) == reference.argmax(1)).sum())
    return {
        "images": len(images),
        "same_argmax": same,
        "max_abs_diff": float((probs - reference).abs().max()),
    }


def check_before_writing(cfg: DictConfig, out_dir: Path) -> None:
    """Called by cli.CheckBeforeWriting before Hydra makes the output folder: the format, the checkpoint (a run
    folder stands for the checkpoint it tested) and its run's config, and the output file."""
    fmt = str(cfg.format)
    if fmt not in SUFFIX:
        raise UserError(f"format={fmt}: choose onnx or torchscript")
    ckpt_path = locate(cfg.ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    # a run the code can no longer build is refused here too (building reads no data)
    load_model(run_config(ckpt_path)[1], ckpt, ckpt_path)
    out = Path(cfg.output) if cfg.get("output") else out_dir / f"model{SUFFIX[fmt]}"
    if out.exists():
        raise UserError(f"{out} already exists: choose another output=")


def export(cfg: DictConfig) -> dict[str, Any]:
    fmt = str(cfg.format)
    check_before_writing(cfg, Path(cfg.paths.output_dir))
    ckpt_path = locate(cfg.ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    _, run_cfg = run_config(ckpt_path)
    model = load_model(run_cfg, ckpt, ckpt_path).float().eval()
    out = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / f"model{SUFFIX[fmt]}"
    set_threads(cfg.get("threads"))
    stored = stored_temperature(ckpt_path, ckpt["state_dict"])
    temperature = stored if stored is not None else 1.0
    if stored is None:
        log.warning(
            "no temperature stored for %s: exporting with T = 1 (uncalibrated probabilities)", ckpt_path.name
        )

    dm = build_from_run(
        run_cfg, "data", ckpt_path, **({"root": cfg.data.root} if cfg.data.get("root") else {})
    )
    dm.prepare_data()
    dm.setup("test")
    images = dm.test_x[: int(cfg.parity_images)]
    # the checkpoint's own fp32 forward pass, as eval.py's model computes it
    with torch.no_grad():
        reference = (model(normalize_uint8(images)).float() / temperature).softmax(-1)

    meta = {
        "producer": PRODUCER,
        "classes": json.dumps(CLASSES),
        "temperature": repr(temperature),
        "input": INPUT,
        "outputs": "logits (N, 10); probabilities (N, 10) = softmax(logits / temperature)",
        "model": type(model.net).__name__,
        "source_checkpoint": str(ckpt_path.resolve()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # the final name only once parity has passed
    tmp = out.with_name(out.name + ".part")
    t0 = time.perf_counter()
    (write_onnx if fmt == "onnx" else write_torchscript)(Exported(model.net, temperature), tmp, meta)
    seconds = time.perf_counter() - t0
    try:
        runner, _ = (onnx_runner if fmt == "onnx" else torchscript_runner)(tmp)
        check = parity(runner, reference, images)
        if check["same_argmax"] != check["images"] or not check["max_abs_diff"] < PARITY_ATOL:
            raise UserError(
                f"{fmt} export failed its parity check against {ckpt_path.name}: argmax agrees on "
                f"{check['same_argmax']}/{check['images']} test images, max |probability difference| "
                f"{check['max_abs_diff']:.2e} (must be < {PARITY_ATOL:g}); nothing written"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(out)
    print(
        f"wrote {out} ({fmt}, {out.stat().st_size / 1024:.0f} KiB, {seconds:.1f} s); input {INPUT}; T = "
        f"{temperature:.4f}\nparity on {check['images']} test images: argmax equal for {check['same_argmax']}/"
        f"{check['images']}, max |probability difference| {check['max_abs_diff']:.2e} (limit {PARITY_ATOL:g})"
    )
    return {"output": str(out), "format": fmt, "temperature": temperature, "seconds": seconds, **check}


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)
