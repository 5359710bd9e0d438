"""predict.py: classify new images with a trained checkpoint.

    python predict.py outputs/<date>/<time>/checkpoints/last.ckpt shirt.jpg photos/ --csv preds.csv

Each file is turned into what the model was trained on by the dataset's own conversion (fmnist_lit/photo.py):
a product photo (dark garment on a light background, any size, JPEG/PNG, transparency, EXIF rotation) becomes a
light garment, trimmed, 28 px on its longest side and centred, on an exact-black 28x28. A file that cannot be read
is reported on its own `error:` line and the others are still classified; the exit status is then 1.
`--save-inputs DIR` writes the 28x28 images the model received, and a mosaic of them.
"""

from __future__ import annotations

import argparse
import csv
import sys
import textwrap
from pathlib import Path

import torch
from PIL import Image

from fmnist_lit.arguments import predict_args
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.photo import to_fmnist
from fmnist_lit.plots import RIGHT, WRONG, image_grid, save
from fmnist_lit.predictor import load_predictor
from fmnist_lit.utils import UserError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# images drawn in the --save-inputs mosaic (the first ones); every one gets its own PNG
MOSAIC_MAX = 256


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


@torch.no_grad()
def predict(ckpt_path: str | Path, images: list[str], invert: str = "auto") -> list[dict]:
    """One dict per file, in order: {"file", "error"} for a file that could not be read, else {"file", "class",
    "confidence", "top3", "probs" (10 floats), "inverted", "input" ((28, 28) uint8, what the model received)}.
    A bad checkpoint or no images at all raise UserError."""
    # a checkpoint (with its run's temperature) or an exported .onnx
    probs_of = load_predictor(ckpt_path)
    rows: list[dict] = []
    for f in find_images(images):
        try:
            x, inverted = to_fmnist(f, invert)
            rows.append({"file": str(f), "input": x, "inverted": inverted})
        except UserError as e:
            rows.append({"file": str(f), "error": str(e)})
    ok = [r for r in rows if "error" not in r]
    if ok:
        # (N, 10)
        probs = probs_of(torch.stack([r["input"] for r in ok]))
        top = probs.topk(3, dim=-1)
        for r, p, v, i in zip(ok, probs, top.values, top.indices):
            r.update(
                {
                    "class": CLASSES[int(i[0])],
                    "confidence": float(v[0]),
                    "probs": p.tolist(),
                    "top3": [(CLASSES[int(j)], float(q)) for j, q in zip(i, v)],
                }
            )
    return rows


def write_csv(path: str | Path, rows: list[dict], min_confidence: float) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["file", "class", "confidence", "low_confidence", "inverted", *(f"p_{c}" for c in CLASSES)]
        )
        w.writerows(
            [
                r["file"],
                r["class"],
                f"{r['confidence']:.6f}",
                int(r["confidence"] < min_confidence),
                int(r["inverted"]),
                *(f"{p:.6f}" for p in r["probs"]),
            ]
            for r in rows
        )


def save_inputs(out: Path, rows: list[dict], min_confidence: float) -> None:
    """out/<index>_<name>.png: each (28, 28) the model received, and out/mosaic.png with the predictions."""
    for i, r in enumerate(rows):
        Image.fromarray(r["input"].numpy()).save(out / f"{i:04d}_{Path(r['file']).stem}.png")
    shown = rows[:MOSAIC_MAX]
    # whole file names, wrapped to the tile's width (about 16 characters)
    names = ["\n".join(textwrap.wrap(Path(r["file"]).name, 16)) for r in shown]
    titles = [f"{name}\n{r['class']}\n{r['confidence']:.0%}" for name, r in zip(names, shown)]
    colors = [WRONG if r["confidence"] < min_confidence else RIGHT for r in shown]
    what = (
        f"{len(rows)} images" if len(rows) == len(shown) else f"the first {len(shown)} of {len(rows)} images"
    )
    save(
        image_grid(
            torch.stack([r["input"] for r in shown]),
            titles,
            f"What the model received ({what}; red: below {min_confidence:.0%} confidence)\n"
            "drawn inverted, dark on white: the model sees a light garment on black",
            colors,
            ncols=min(8, len(shown)),
        ),
        out / "mosaic.png",
    )


def _check_new_folder(path: str) -> Path:
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--save-inputs {out}: exists and is not an empty folder (nothing is overwritten)")
    return out


def main(argv: list[str] | None = None) -> int:
    """predict.py on `argv` (default: the process's arguments) -> its exit status."""
    return run(predict_args(sys.argv[1:] if argv is None else argv))


def run(a: argparse.Namespace) -> int:
    """predict.py on its parsed arguments (arguments.predict_args) -> its exit status: 0, 1 if a file could not be
    read, 2 for a mistake in the input (one `error:` line)."""
    try:
        out = _check_new_folder(a.save_inputs) if a.save_inputs else None
        rows = predict(a.ckpt_path, a.images, a.invert)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ok = [r for r in rows if "error" not in r]
    width = max(len(r["file"]) for r in rows)
    for r in rows:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
            continue
        alts = ", ".join(f"{c} {p:.1%}" for c, p in r["top3"][1:])
        low = "  (low confidence)" if r["confidence"] < a.min_confidence else ""
        print(f"{r['file']:<{width}}  {r['class']:<12} {r['confidence']:6.1%}   (then {alts}){low}")
    if a.csv:
        write_csv(a.csv, ok, a.min_confidence)
    if out and ok:
        out.mkdir(parents=True, exist_ok=True)
        save_inputs(out, ok, a.min_confidence)
    failed = len(rows) - len(ok)
    print(f"{len(ok)} predicted, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
