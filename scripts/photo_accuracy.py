"""predict.py's accuracy on product-photo-like files made from real test images (scripts/photo_set.py), per
variant, next to the 28x28 originals. The "before" column is a naive conversion (grayscale, the whole canvas
fitted into 28x28, inverted if the border is light), with the same model.

    python scripts/photo_accuracy.py outputs/photo_ckpt/checkpoints/last.ckpt --n 300 \\
        --figure docs/figures/photo_inputs.png

Prints a Markdown table (docs/PHOTOS.md). `--set DIR` keeps the files (and reuses them if DIR/labels.csv exists).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from fmnist_lit import photo
from fmnist_lit.batches import normalize_uint8
from fmnist_lit.checkpoint import load_model, read_checkpoint, run_config
from fmnist_lit.fashion_mnist import CLASSES, load_split
from fmnist_lit.hardware import cpu_name
from fmnist_lit.plots import RIGHT, WRONG, image_grid
from fmnist_lit.predict import predict

from photo_set import VARIANTS, write_set

# the before/after rows of --figure
FIGURE_VARIANTS = ("white_jpeg", "grey_jpeg", "rgba_png")


def _as_tensor(g: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(g.tobytes()), dtype=torch.uint8).view(g.height, g.width)


def _border_mean(g: Image.Image) -> int:
    t = _as_tensor(g).float()
    return int(torch.cat([t[0], t[-1], t[:, 0], t[:, -1]]).mean().round())


def before_28(path: Path) -> torch.Tensor:
    """The naive conversion (as `--invert auto`), for the "before" column: (28, 28) uint8."""
    g = ImageOps.exif_transpose(Image.open(path)).convert("L")
    g = ImageOps.pad(g, (28, 28), method=Image.Resampling.LANCZOS, color=_border_mean(g))
    x = _as_tensor(g)
    return 255 - x if _border_mean(g) > 127 else x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt_path")
    ap.add_argument("--n", type=int, default=300, help="the first N official test images")
    ap.add_argument(
        "--split",
        choices=["test", "train"],
        default="test",
        help="train: the last N training images instead (for choosing photo.py's levels)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the photo-like set")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated; the original is always first"
    )
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a level of fmnist_lit/photo.py for this run, e.g. TRIM_LEVEL=0.25",
    )
    ap.add_argument("--no-before", action="store_true", help="skip the before column")
    ap.add_argument("--set", help="folder for the files (default: a temporary one)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--figure", help="write a before/after PNG of what the model received")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for p in a.param:
        name, value = p.split("=", 1)
        if not (name.isupper() and isinstance(getattr(photo, name, None), float)):
            ap.error(f"--param {p}: not one of photo.py's levels")
        setattr(photo, name, float(value))
    variants = ["original", *(v for v in a.variants.split(",") if v != "original")]
    tmp = tempfile.TemporaryDirectory(prefix="photo_set_") if not a.set else None
    root = Path(a.set or tmp.name)
    if not (root / "labels.csv").is_file():
        x, y = load_split(Path(a.data_root), train=a.split == "train")
        x, y = (x[-a.n :], y[-a.n :]) if a.split == "train" else (x[: a.n], y[: a.n])
        t0 = time.perf_counter()
        write_set(x.numpy(), y.numpy(), root, a.seed, tuple(variants))
        print(f"built {a.n} images x {len(variants)} variants in {time.perf_counter() - t0:.0f} s -> {root}")
    with open(root / "labels.csv") as f:
        label = {r["file"]: r["class"] for r in csv.DictReader(f)}

    ckpt = Path(a.ckpt_path)
    model = load_model(run_config(ckpt)[1], read_checkpoint(ckpt), ckpt).eval()
    table, shown = [], {}
    for v in variants:
        t0 = time.perf_counter()
        rows = predict(ckpt, [str(root / v)])
        sec = (time.perf_counter() - t0) / len(rows)
        names = [Path(r["file"]).relative_to(root).as_posix() for r in rows]
        after = [r.get("class") == label[n] for r, n in zip(rows, names)]
        old, old_cls = None, [None] * len(rows)
        if not a.no_before:
            with torch.no_grad():
                old = torch.stack([before_28(Path(r["file"])) for r in rows])
                old_cls = [CLASSES[int(i)] for i in model(normalize_uint8(old)).argmax(-1)]
        before = [c == label[n] for c, n in zip(old_cls, names)]
        table.append((v, len(rows), 100 * sum(before) / len(rows), 100 * sum(after) / len(rows), sec))
        shown[v] = (names, old, old_cls, rows)
    ref = table[0][3]
    levels = ", ".join(f"{k}={getattr(photo, k)}" for k in ("TRIM_LEVEL", "SHARPEN", "FLOOR"))
    print(f"\nmodel {ckpt}; photo.py {levels}; {cpu_name()}, {a.threads} thread(s)\n")
    print("| variant | files | before (naive) | after | after - original | s per file |")
    print("|---|---|---|---|---|---|")
    for v, n, b, f, sec in table:
        print(
            f"| {v} | {n} | {'-' if a.no_before else f'{b:.1f}%'} | {f:.1f}% | {f - ref:+.1f} | {sec:.3f} |"
        )
    if a.figure and not a.no_before:
        write_figure(a.figure, shown, label)
    return 0


def write_figure(path: str, shown: dict, label: dict) -> None:
    """Columns: the first test image of each class; rows: the original, then before/after per variant."""
    names, _, _, rows = shown["original"]
    first = [
        next(i for i, n in enumerate(names) if label[n] == c)
        for c in CLASSES
        if c in {label[n] for n in names}
    ]
    images, titles, colors = [], [], []
    for i in first:
        r = rows[i]
        images.append(r["input"])
        titles.append(f"28x28 original\n{r['class']}")
        colors.append(RIGHT if r["class"] == label[names[i]] else WRONG)
    for v in [v for v in FIGURE_VARIANTS if v in shown]:
        vnames, old, old_cls, vrows = shown[v]
        for what in ("before", "after"):
            for i in first:
                cls = old_cls[i] if what == "before" else vrows[i]["class"]
                images.append(old[i] if what == "before" else vrows[i]["input"])
                titles.append(f"{v} {what}\n{cls}")
                colors.append(RIGHT if cls == label[vnames[i]] else WRONG)
    fig = image_grid(
        torch.stack(images),
        titles,
        "What the model receives from photo-like files, before and "
        "after (title: the predicted class; red = wrong)",
        colors,
        ncols=len(first),
    )
    fig.savefig(path, dpi=60)


if __name__ == "__main__":
    raise SystemExit(main())
