"""Robustness: test accuracy under common corruptions of the test images, at three severities each.

Every corruption maps a uint8 batch (N, 28, 28) to a uint8 batch of the same shape, on tensors, for the whole
test set at once; random ones (noise, the direction of a rotation or shift) draw from a generator seeded per
(corruption, severity), so every run and every model sees the same corrupted images. All corrupted copies are
predicted in one `trainer.predict` pass (fmnist_lit.calibration.predict_logits), with the run's precision.

Opt-in: `python train.py report.robustness=true`, or later `python eval.py ckpt_path=... report.robustness=true`.
Cost and the choice of severities: docs/ROBUSTNESS.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

from fmnist_lit.calibration import predict_logits

log = logging.getLogger(__name__)
# fixed: the corrupted images are the same for every run, so runs compare
SEED = 0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def gaussian_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    """Add N(0, std^2) per pixel; std in grey levels (0..255)."""
    return _to_uint8(x.float() + std * torch.randn(x.shape, generator=g))


def blur(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur, sigma in pixels (kernel 2 * ceil(3 sigma) + 1)."""
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x.unsqueeze(1), [k, k], [sigma, sigma]).squeeze(1)


def contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    """Blend each image with its mean grey level: factor 1 = unchanged, 0 = flat."""
    return TF.adjust_contrast(x.unsqueeze(1), factor).squeeze(1)


def brightness(x: torch.Tensor, offset: float, g: torch.Generator) -> torch.Tensor:
    """Add `offset` grey levels to every pixel: the black background turns grey, as under poor lighting."""
    return _to_uint8(x.float() + offset)


def _warp(x: torch.Tensor, angle_deg: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by angle_deg (N,) and move it by (dx, dy) (N,) pixels; zero fill."""
    a = angle_deg.float() * math.pi / 180
    h, w = x.shape[-2:]
    # theta (N, 2, 3): affine_grid maps output to input coordinates in [-1, 1], so the inverse rotation, then the
    # inverse shift
    theta = torch.stack(
        [
            torch.stack([a.cos(), -a.sin(), -2 * dx.float() / w], 1),
            torch.stack([a.sin(), a.cos(), -2 * dy.float() / h], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [len(x), 1, h, w], align_corners=False)
    return _to_uint8(F.grid_sample(x.unsqueeze(1).float(), grid, align_corners=False).squeeze(1))


def rotation(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate by `degrees`, clockwise or anticlockwise at random per image (bilinear)."""
    sign = torch.randint(0, 2, (len(x),), generator=g) * 2 - 1
    zero = torch.zeros(len(x))
    return _warp(x, sign * degrees, zero, zero)


def shift(x: torch.Tensor, pixels: int, g: torch.Generator) -> torch.Tensor:
    """Move each image by `pixels` (rounded per axis) in a random direction; the garment may leave the frame."""
    phi = torch.rand(len(x), generator=g) * 2 * math.pi
    return _warp(x, torch.zeros(len(x)), (pixels * phi.cos()).round(), (pixels * phi.sin()).round())


def jpeg(x: torch.Tensor, quality: int, g: torch.Generator) -> torch.Tensor:
    """Encode and decode as JPEG at `quality` (libjpeg through torchvision, the whole batch in one call each)."""
    encoded = encode_jpeg(list(x.unsqueeze(1)), quality=quality)
    return torch.stack(decode_jpeg(encoded, mode=ImageReadMode.GRAY)).squeeze(1)


def inversion(x: torch.Tensor, level: None, g: torch.Generator) -> torch.Tensor:
    """255 - x: a dark garment on a light background, as in most product photos (one severity)."""
    return 255 - x


# name -> (function, its argument at severities 1, 2, 3)
CORRUPTIONS: dict[str, tuple[Callable[..., torch.Tensor], tuple[Any, ...]]] = {
    # std, grey levels
    "gaussian_noise": (gaussian_noise, (8, 16, 32)),
    # sigma, pixels
    "blur": (blur, (0.5, 1.0, 1.5)),
    # factor
    "contrast": (contrast, (0.6, 0.4, 0.2)),
    # added grey levels
    "brightness": (brightness, (32, 64, 96)),
    # degrees
    "rotation": (rotation, (10, 20, 30)),
    # pixels
    "shift": (shift, (2, 3, 4)),
    # quality
    "jpeg": (jpeg, (50, 20, 10)),
    "inversion": (inversion, (None,)),
}


def corrupt(x: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """x: uint8 (N, 28, 28) on the CPU -> the same images under corruption `name` at severity 1, 2 or 3."""
    fn, levels = CORRUPTIONS[name]
    g = torch.Generator().manual_seed(SEED * 1000 + list(CORRUPTIONS).index(name) * 10 + severity)
    return fn(x, levels[severity - 1], g)


def evaluate_corruptions(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any
) -> dict[str, Any] | None:
    """metrics.json's `robustness`: test accuracy clean and per corruption and severity, and the seconds it took.
    None (with a warning) when the trainer predicts only part of the data (fast_dev_run, limit_predict_batches)."""
    t0 = time.perf_counter()
    x, y = datamodule.test_x.cpu(), datamodule.test_y.cpu()
    sets = [("clean", 0, x)] + [
        (name, s, corrupt(x, name, s))
        for name, (_, levels) in CORRUPTIONS.items()
        for s in range(1, len(levels) + 1)
    ]
    t1 = time.perf_counter()
    y_all = y.repeat(len(sets))
    logits = predict_logits(trainer, model, datamodule, torch.cat([s[2] for s in sets]), y_all)
    if len(logits) != len(y_all):
        log.warning(
            "robustness sweep skipped: the trainer predicted %d of %d images", len(logits), len(y_all)
        )
        return None
    correct = (logits.argmax(1) == y_all).view(len(sets), len(y)).double().mean(1)
    acc: dict[str, dict[str, float]] = {}
    for (name, s, _), a in zip(sets, correct.tolist()):
        acc.setdefault(name, {})[str(s)] = a
    out = {
        "clean": acc.pop("clean")["0"],
        "accuracy": acc,
        "images": len(y),
        "seed": SEED,
        "levels": {name: list(levels) for name, (_, levels) in CORRUPTIONS.items()},
        "seconds_corrupt": round(t1 - t0, 2),
        "seconds_predict": round(time.perf_counter() - t1, 2),
    }
    log.info(
        "robustness sweep: %d corrupted test sets in %.1f s (%.1f s corrupting, %.1f s predicting)",
        len(sets) - 1,
        time.perf_counter() - t0,
        out["seconds_corrupt"],
        out["seconds_predict"],
    )
    return out
