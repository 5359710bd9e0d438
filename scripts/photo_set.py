"""Product-photo-like image files made from Fashion-MNIST images: what a user brings to predict.py.

Each (28, 28) uint8 image (light garment on black) is read as the garment's opacity: it is upscaled (bicubic) to a
200-600 px tile, painted in a dark colour onto a larger landscape, square or portrait canvas at an off-centre place
(with margin), over a white or light-grey background with a soft drop shadow and sensor noise, then saved in the
formats of `VARIANTS`. Everything is drawn from `numpy.random.default_rng([seed, index, variant])`, so a file
depends only on (seed, image, index, variant) and the same call writes the same bytes.

    python scripts/photo_set.py photos/ --n 300       # the first 300 official test images, every variant

scripts/photo_accuracy.py measures predict.py on such a set (docs/PHOTOS.md).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fmnist_lit.fashion_mnist import CLASSES

# name -> file suffix; `original` is the 28x28 image itself, the reference the others are compared with
VARIANTS = {
    "original": ".png",
    # white background
    "white_jpeg": ".jpg",
    # light-grey background
    "grey_jpeg": ".jpg",
    # cut-out: transparent background (black RGB under it), no shadow
    "rgba_png": ".png",
    # pixels stored rotated, EXIF orientation tag that turns them upright
    "exif_jpeg": ".jpg",
    # 16-bit grayscale
    "png16": ".png",
    # 64-colour palette
    "palette_png": ".png",
}
LUMA = np.array([0.299, 0.587, 0.114])
# stored pixels for EXIF orientation tag t are the upright image under the inverse of the tag's display transform
EXIF_STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _place(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(28, 28) uint8 -> ((H, W) float opacity in [0, 1]: the upscaled garment off-centre on a larger canvas,
    the side of the upscaled 28x28 in pixels)."""
    # tile side in pixels
    s = int(rng.integers(200, 601))
    tile = Image.fromarray(x.astype(np.float32) / 255, "F").resize((s, s), Image.Resampling.BICUBIC)
    # width / height: landscape, square, portrait
    aspect = rng.choice([4 / 3, 1.0, 3 / 4])
    side = s * rng.uniform(1.2, 1.8)
    w, h = round(side * max(1, aspect)), round(side / min(1, aspect))
    margin = round(0.04 * s)
    w, h = max(w, s + 2 * margin), max(h, s + 2 * margin)
    top, left = int(rng.integers(margin, h - s - margin + 1)), int(rng.integers(margin, w - s - margin + 1))
    canvas = np.zeros((h, w), np.float32)
    canvas[top : top + s, left : left + s] = np.asarray(tile).clip(0, 1)
    return canvas, s


def _shadow(alpha: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft drop shadow of the garment (`size`: its tile side in pixels): blurred, shifted down and sideways;
    (H, W) darkening in [0, 0.35]."""
    blur = ImageFilter.GaussianBlur(rng.uniform(0.02, 0.05) * size)
    blurred = Image.fromarray((alpha * 255).astype(np.uint8)).filter(blur)
    dy, dx = round(rng.uniform(0.01, 0.04) * size), round(rng.uniform(-0.03, 0.03) * size)
    m, h, w = np.asarray(blurred, np.float32) / 255, *alpha.shape
    # m moved by (dy >= 0, dx), zeros where nothing moved in
    shifted = np.zeros_like(m)
    shifted[dy:, max(dx, 0) : w + min(dx, 0)] = m[: h - dy, max(-dx, 0) : w + min(-dx, 0)]
    return rng.uniform(0.15, 0.35) * shifted


def photo(x: np.ndarray, rng: np.random.Generator, background: float) -> np.ndarray:
    """(28, 28) uint8 -> (H, W, 3) float RGB in [0, 1]: a dark garment photographed on `background`."""
    alpha, size = _place(x, rng)
    # (H, W, 1)
    alpha = alpha[..., None]
    # a dark garment
    colour = rng.uniform(0.0, 0.25, 3)
    back = background * (1 - _shadow(alpha[..., 0], size, rng))[..., None]
    rgb = back * (1 - alpha) + colour * alpha
    # sensor noise, 2.5-6.4 levels of 255
    rgb = rgb + rng.normal(0, rng.uniform(0.01, 0.025), rgb.shape)
    return rgb.clip(0, 1)


def _u8(a: np.ndarray) -> np.ndarray:
    return (a * 255).round().astype(np.uint8)


def render(x: np.ndarray, variant: str, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One variant of a (28, 28) uint8 image -> (PIL image, keyword arguments for its `save`)."""
    jpeg = {"quality": int(rng.integers(75, 96))}
    if variant == "original":
        return Image.fromarray(x), {}
    if variant == "white_jpeg":
        return Image.fromarray(_u8(photo(x, rng, 1.0))), jpeg
    if variant == "grey_jpeg":
        return Image.fromarray(_u8(photo(x, rng, rng.uniform(0.75, 0.9)))), jpeg
    if variant == "rgba_png":
        alpha, _ = _place(x, rng)
        colour = rng.uniform(0.0, 0.25, 3)
        # what lies under transparent pixels is often black
        rgb = np.where(alpha[..., None] > 0, colour, 0.0)
        return Image.fromarray(np.dstack([_u8(rgb), _u8(alpha)]), "RGBA"), {}
    if variant == "exif_jpeg":
        tag = int(rng.choice(list(EXIF_STORE)))
        img = Image.fromarray(_u8(photo(x, rng, 1.0))).transpose(EXIF_STORE[tag])
        exif = Image.Exif()
        # the EXIF Orientation tag
        exif[0x0112] = tag
        return img, {**jpeg, "exif": exif}
    if variant == "png16":
        gray = photo(x, rng, 1.0) @ LUMA
        return Image.fromarray((gray * 65535).round().astype(np.uint16)), {}
    if variant == "palette_png":
        return Image.fromarray(_u8(photo(x, rng, 1.0))).quantize(64), {}
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


def write_set(
    images: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    seed: int = 0,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> Path:
    """Write out/<variant>/<index>.<ext> for every image and variant, and out/labels.csv (file, label, class).
    images: (N, 28, 28) uint8, labels: (N,) class indices."""
    out = Path(out)
    rows = []
    for v in variants:
        (out / v).mkdir(parents=True, exist_ok=True)
        for i, (x, y) in enumerate(zip(images, labels)):
            img, kw = render(
                np.asarray(x, np.uint8), v, np.random.default_rng([seed, i, list(VARIANTS).index(v)])
            )
            name = f"{v}/{i:05d}{VARIANTS[v]}"
            img.save(out / name, **kw)
            rows.append((name, int(y), CLASSES[int(y)]))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label", "class"), *rows])
    return out


def main(argv: list[str] | None = None) -> int:
    from fmnist_lit.fashion_mnist import load_split

    ap = argparse.ArgumentParser(
        description="Write product-photo-like files made from Fashion-MNIST test images."
    )
    ap.add_argument("out", help="a new folder (refused if it exists)")
    ap.add_argument("--n", type=int, default=300, help="the first N official test images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default="data", help="holds FashionMNIST/raw/ (as data.root)")
    a = ap.parse_args(argv)
    if Path(a.out).exists():
        ap.error(f"{a.out} exists: choose a new folder")
    x, y = load_split(Path(a.data_root), train=False)
    write_set(x[: a.n].numpy(), y[: a.n].numpy(), a.out, a.seed)
    print(f"{a.n} images x {len(VARIANTS)} variants -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
