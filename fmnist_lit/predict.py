"""predict.py: classify new images with a trained checkpoint.

    python predict.py outputs/<date>/<time>/checkpoints/last.ckpt shirt.png photos/ --csv preds.csv

Images are turned into Fashion-MNIST's format: grayscale, fitted into 28x28 (aspect kept, padded), and — like
the dataset — a light object on a dark background: photos of a dark item on a light background are inverted
(`--invert auto` decides from the border pixels).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist_lit.data import CLASSES, normalize_uint8
from fmnist_lit.evaluate import load_model, read_checkpoint, run_config
from fmnist_lit.utils import UserError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def find_images(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError(f"no images found in {' '.join(inputs)} (looked for {', '.join(sorted(SUFFIXES))})")
    return files


def to_fmnist(path: Path, invert: str = "auto") -> torch.Tensor:
    """An image file -> (28, 28) uint8, light object on dark background."""
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
    g = ImageOps.exif_transpose(img).convert("L")
    g = ImageOps.pad(g, (28, 28), method=Image.Resampling.LANCZOS, color=_border_mean(g))
    x = torch.frombuffer(bytearray(g.tobytes()), dtype=torch.uint8).view(28, 28)
    if invert == "yes" or (invert == "auto" and _border_mean(g) > 127):
        x = 255 - x
    return x


def _border_mean(g: Image.Image) -> int:
    t = torch.frombuffer(bytearray(g.tobytes()), dtype=torch.uint8).view(g.height, g.width).float()
    border = torch.cat([t[0], t[-1], t[:, 0], t[:, -1]])
    return int(border.mean().round())


@torch.no_grad()
def predict(ckpt_path: str | Path, images: list[str], invert: str = "auto") -> list[dict]:
    ckpt_path = Path(ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    _, run_cfg = run_config(ckpt_path)
    model = load_model(run_cfg, ckpt, ckpt_path).eval()
    files = find_images(images)
    x = torch.stack([to_fmnist(f, invert) for f in files])  # (N, 28, 28) uint8
    probs = model(normalize_uint8(x)).float().softmax(-1)  # (N, 10)
    top = probs.topk(3, dim=-1)
    return [{"file": str(f), "class": CLASSES[int(i[0])], "confidence": float(p[0]),
             "top3": [(CLASSES[int(j)], float(q)) for j, q in zip(i, p)]}
            for f, p, i in zip(files, top.values, top.indices)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Classify images with a fmnist-lit checkpoint.")
    ap.add_argument("ckpt_path", help="a checkpoint of a train.py run (<run>/checkpoints/*.ckpt)")
    ap.add_argument("images", nargs="+", help="image files and/or folders of images")
    ap.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                    help="make the object light on dark like Fashion-MNIST (auto: if the border is light)")
    ap.add_argument("--csv", help="also write the predictions to this CSV file")
    a = ap.parse_args(argv)
    try:
        rows = predict(a.ckpt_path, a.images, a.invert)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(r["file"]) for r in rows)
    for r in rows:
        alts = ", ".join(f"{c} {p:.1%}" for c, p in r["top3"][1:])
        print(f"{r['file']:<{width}}  {r['class']:<12} {r['confidence']:6.1%}   (then {alts})")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "class", "confidence"])
            w.writerows([r["file"], r["class"], f"{r['confidence']:.6f}"] for r in rows)
    return 0
