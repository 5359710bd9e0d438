"""An image file -> the (28, 28) uint8 a Fashion-MNIST model receives, by the dataset's own conversion.

Zalando made each Fashion-MNIST image from a product photo (dark garment on white) in these steps (the dataset's
README): trim the background, resize the longest edge to 28, sharpen, extend to 28x28 centred, negate, grayscale.
`to_fmnist` runs the same steps on any photo, in the order that works on one float image (H, W) in [0, 1]:

  read      EXIF orientation applied; alpha composited on white; 16-bit and palette images scaled to [0, 1]
  negate    the background level is the median of the border; a light background means a dark object, so the
            image is negated (`invert="auto"`), and background becomes 0 and full contrast 1 ("ink")
  trim      the object's bounding box: pixels whose ink (blurred by 1 px against sensor noise) reaches a
            fraction of the strongest ink, so a faint shadow or JPEG ringing does not widen it; no margin is
            added, as the dataset has none
  resize    longest edge to 28, antialiased (bicubic)
  sharpen   unsharp mask, Gaussian sigma 1 (as Zalando's sharpen)
  floor     ink below a small fraction of the peak -> exactly 0 (the dataset's black background), the peak -> 255
  extend    centred on 28x28 by the bounding box (the dataset's placement: pad left/top = ceil((28 - size) / 2))

Every Fashion-MNIST image spans 28 px on its longest side, centred that way, with its brightest pixel at
254-255; the steps reproduce those properties. The levels below (and bounding-box rather than centre-of-mass
centring) were chosen on photo-like files made from training images (docs/PHOTOS.md). An image that is already
28x28 is the model's format: it is only made gray and (if needed) negated, never trimmed or resized.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps

from fmnist_lit.utils import UserError

SIZE = 28
# ITU-R 601-2, as PIL's convert("L")
LUMA = (0.299, 0.587, 0.114)
# width of the border band that gives the background level, as a fraction of the shorter side
BORDER = 0.02
# object pixels have at least this fraction of the strongest ink (after a 1-px blur)
TRIM_LEVEL = 0.15
# unsharp-mask amount: x + SHARPEN * (x - blur(x)), sigma 1 px at 28x28
SHARPEN = 0.5
# ink below this fraction of the peak is background: exactly 0 after the conversion
FLOOR = 0.05


def open_image(path: str | Path) -> Image.Image:
    """Decode a file, refusing decompression bombs; EXIF orientation applied. Any failure -> UserError."""
    with warnings.catch_warnings():
        # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice it: both are refused
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
            img.load()
            # a malformed EXIF block fails here, as unreadable
            img = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UserError(f"{path}: refused as a possible decompression bomb ({e})") from None
        # decoders of corrupt files raise many types (OSError, SyntaxError, ValueError, struct.error, ...)
        except Exception as e:  # noqa: BLE001
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"{path}: not a readable image ({reason})") from None
    return img


def to_gray(img: Image.Image) -> torch.Tensor:
    """Any PIL image -> (H, W) float32 in [0, 1]. Transparent parts are composited on white (on black when the
    opaque part is light, so a white garment on a transparent background stays visible)."""
    if img.mode.startswith("I;16"):
        return torch.from_numpy(np.asarray(img).astype(np.float32) / 65535)
    # 32-bit int or float: 8-bit, 16-bit or [0, 1] data, told apart by the range
    if img.mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        top = float(a.max(initial=0))
        scale = (
            1.0 if img.mode == "F" and top <= 1 else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        )
        return torch.from_numpy((a / scale).clip(0, 1).astype(np.float32))
    if img.mode in ("1", "L"):
        return torch.from_numpy(np.asarray(img.convert("L")).astype(np.float32) / 255)
    alpha = img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or img.has_transparency_data
    rgba = torch.from_numpy(np.asarray(img.convert("RGBA" if alpha else "RGB")).astype(np.float32) / 255)
    # (H, W, 3) -> (H, W)
    gray = rgba[..., :3] @ torch.tensor(LUMA)
    if not alpha:
        return gray
    a = rgba[..., 3]
    object_level = float((gray * a).sum() / a.sum().clamp(min=1e-6))
    under = 1.0 if object_level < 0.5 else 0.0
    return gray * a + under * (1 - a)


def border_level(g: torch.Tensor) -> float:
    """Median of a band along the four edges: the background, even where the object touches an edge."""
    k = max(1, round(BORDER * min(g.shape)))
    band = torch.cat([g[:k].flatten(), g[-k:].flatten(), g[:, :k].flatten(), g[:, -k:].flatten()])
    return float(band.median())


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (H, W), edges replicated; separable (one row pass, one column pass)."""
    # +-3 sigma
    r = int(3 * sigma + 0.5)
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    # (1, 1, H + 2r, W + 2r)
    y = F.pad(x[None, None], (r, r, r, r), mode="replicate")
    return F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[0, 0]


def object_box(ink: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), exclusive ends, of the pixels that are object, or None if there are none."""
    # single noisy pixels never reach the level
    smooth = _blur(ink, 1.0)
    peak = float(smooth.max())
    if peak < 1 / 255:
        return None
    mask = smooth >= TRIM_LEVEL * peak
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def fmnist_from_gray(g: torch.Tensor, invert: str = "auto") -> tuple[torch.Tensor, bool]:
    """(H, W) float in [0, 1] -> ((28, 28) uint8 light object on black, whether the image was negated)."""
    inverted = invert == "yes" or (invert == "auto" and border_level(g) > 0.5)
    x = 1 - g if inverted else g
    # already the dataset's format
    if tuple(x.shape) == (SIZE, SIZE):
        return (x * 255).round().to(torch.uint8), inverted
    bg = border_level(x)
    # background 0, full contrast 1
    ink = ((x - bg) / max(1 - bg, 1e-3)).clamp(0, 1)
    box = object_box(ink)
    if box is None:
        raise UserError("no object: the image has no pixel that differs from its background")
    top, left, bottom, right = box
    crop = ink[top:bottom, left:right]
    h, w = crop.shape
    s = SIZE / max(h, w)
    size = [max(1, min(SIZE, round(h * s))), max(1, min(SIZE, round(w * s)))]
    small = TF.resize(crop[None], size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)[0]
    small = (small + SHARPEN * (small - _blur(small, 1.0))).clamp(min=0)
    peak = float(small.max())
    small = ((small - FLOOR * peak) / max(peak * (1 - FLOOR), 1e-6)).clamp(0, 1)
    out = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    t, lft = (SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2
    out[t : t + size[0], lft : lft + size[1]] = (small * 255).round().to(torch.uint8)
    return out, inverted


def to_fmnist(path: str | Path, invert: str = "auto") -> tuple[torch.Tensor, bool]:
    """An image file -> ((28, 28) uint8 as the model receives it, whether it was negated). Errors: UserError."""
    try:
        return fmnist_from_gray(to_gray(open_image(path)), invert)
    except UserError as e:
        raise UserError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
