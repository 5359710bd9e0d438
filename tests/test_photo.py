"""The photo -> 28x28 conversion (fmnist_lit/photo.py) on synthetic images, and the photo-like set builder
(scripts/photo_set.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist_lit.photo import to_fmnist, to_gray
from fmnist_lit.synthetic import make_images
from fmnist_lit.utils import UserError

import photo_set


def garment(h: int = 400, w: int = 300, box=(60, 40, 300, 160), level: int = 40) -> np.ndarray:
    """(h, w) uint8: a dark rectangle (top, left, bottom, right) off-centre on white."""
    a = np.full((h, w), 255, np.uint8)
    t, lf, b, r = box
    a[t:b, lf:r] = level
    return a


def nonzero_box(x: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = x.any(1).nonzero()[:, 0], x.any(0).nonzero()[:, 0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def test_object_is_trimmed_to_28_and_centred(tmp_path):
    # 240 x 120 px object, off-centre
    Image.fromarray(garment()).save(tmp_path / "g.png")
    x, inverted = to_fmnist(tmp_path / "g.png")
    assert inverted and x.dtype == torch.uint8 and x.shape == (28, 28)
    # 28 tall, 14 wide, centred as in the dataset: left = ceil(14 / 2)
    assert nonzero_box(x) == (
        0,
        7,
        28,
        21,
    )
    # exact-0 background, full contrast
    assert x[0, 0] == 0 and x.max() == 255 and x[14, 14] > 200


def test_noise_and_soft_shadow_do_not_move_the_box(tmp_path):
    rng = np.random.default_rng(0)
    a = garment().astype(np.float64)
    yy, xx = np.mgrid[:400, :300]
    # soft shadow under the object
    shadow = 0.25 * np.exp(-(((yy - 320) / 25) ** 2 + ((xx - 110) / 60) ** 2))
    a = a * (1 - shadow) + rng.normal(0, 5, a.shape)
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(tmp_path / "g.jpg", quality=85)
    x, _ = to_fmnist(tmp_path / "g.jpg")
    t, lf, b, r = nonzero_box(x)
    assert (t, b) == (0, 28) and abs(lf - 7) <= 1 and abs(r - 21) <= 1
    assert (x[:, :lf] == 0).all() and (x[:, r:] == 0).all()


def test_alpha_is_composited_on_white_with_exact_zero_background(tmp_path):
    # transparent black, as many cut-outs store it
    rgba = np.zeros((300, 200, 4), np.uint8)
    rgba[50:250, 60:140] = (30, 60, 90, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    x, inverted = to_fmnist(tmp_path / "cut.png")
    assert inverted and x.max() == 255
    t, lf, b, r = nonzero_box(x)
    assert (t, b) == (0, 28) and (x[:, :lf] == 0).all() and (x[:, r:] == 0).all()
    # the object is light throughout: nothing of the black under alpha shows
    assert (x[1:-1, lf + 1 : r - 1] > 200).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    a8 = garment(level=64)
    # 16-bit: 0..65535
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    img = Image.open(tmp_path / "g16.png")
    assert img.mode.startswith("I;16")
    # convert("L") would clip it to 255
    assert abs(float(to_gray(img)[100, 100]) - 64 / 255) < 1e-4
    Image.fromarray(a8).save(tmp_path / "g8.png")
    assert torch.equal(to_fmnist(tmp_path / "g16.png")[0], to_fmnist(tmp_path / "g8.png")[0])


def test_int32_sixteen_bit_data_is_scaled(tmp_path):
    img = Image.fromarray(garment(level=64).astype(np.int32) * 257, "I")
    assert abs(float(to_gray(img)[100, 100]) - 64 / 255) < 1e-4 and float(to_gray(img)[0, 0]) == 1.0


def test_palette_images(tmp_path):
    rgb = np.dstack([garment(level=40)] * 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).quantize(16).save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    assert torch.equal(to_fmnist(tmp_path / "pal.png")[0], to_fmnist(tmp_path / "rgb.png")[0])
    rgba = np.zeros((300, 200, 4), np.uint8)
    rgba[50:250, 60:140] = (20, 20, 20, 255)
    # transparent palette entry
    Image.fromarray(rgba, "RGBA").quantize(8).save(tmp_path / "pal_alpha.png")
    x, inverted = to_fmnist(tmp_path / "pal_alpha.png")
    assert inverted and x[0, 0] == 0 and x[14, 14] > 200


@pytest.mark.parametrize("tag", sorted(photo_set.EXIF_STORE))
def test_exif_orientation_is_applied(tmp_path, tag):
    upright = Image.fromarray(garment(box=(60, 40, 300, 160)))
    # a foot to the right at the bottom: any rotation shows
    upright.paste(40, (160, 260, 260, 300))
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = tag
    upright.transpose(photo_set.EXIF_STORE[tag]).save(tmp_path / "rotated.png", exif=exif)
    assert torch.equal(to_fmnist(tmp_path / "rotated.png")[0], to_fmnist(tmp_path / "upright.png")[0])


def test_fmnist_28x28_is_unchanged(tmp_path):
    x, _ = make_images(3, 7)
    for i, img in enumerate(x):
        Image.fromarray(img.numpy()).save(tmp_path / f"{i}.png")
        Image.fromarray(255 - img.numpy()).save(tmp_path / f"neg{i}.png")
        same, inverted = to_fmnist(tmp_path / f"{i}.png")
        assert torch.equal(same, img) and not inverted
        # light background: negated, nothing else
        assert torch.equal(to_fmnist(tmp_path / f"neg{i}.png")[0], img)
    assert torch.equal(to_fmnist(tmp_path / "0.png", invert="yes")[0], 255 - x[0])


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    # 1,200 pixels
    Image.fromarray(garment(40, 30, (5, 5, 30, 20))).save(tmp_path / "big.png")
    # PIL warns above the limit and raises above twice it: both refused
    for limit in (1000, 500):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(UserError, match="decompression bomb") as e:
            to_fmnist(tmp_path / "big.png")
        assert str(e.value).startswith(str(tmp_path / "big.png")) and "\n" not in str(e.value)


def test_unreadable_and_empty_images_are_user_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(UserError, match="bad.png: not a readable image"):
        to_fmnist(tmp_path / "bad.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(UserError, match="blank.png: no object"):
        to_fmnist(tmp_path / "blank.png")


def test_photo_set_is_deterministic_and_complete(tmp_path):
    x, y = make_images(2, 3)
    a = photo_set.write_set(x.numpy(), y.numpy(), tmp_path / "a", seed=5)
    b = photo_set.write_set(x.numpy(), y.numpy(), tmp_path / "b", seed=5)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.*"))
    # + labels.csv
    assert len(files) == 2 * len(photo_set.VARIANTS) + 1
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    modes = {v: Image.open(next((a / v).iterdir())) for v in photo_set.VARIANTS}
    assert modes["rgba_png"].mode == "RGBA" and modes["png16"].mode.startswith("I;16")
    assert (
        modes["palette_png"].mode == "P" and modes["exif_jpeg"].getexif().get(0x0112) in photo_set.EXIF_STORE
    )
    assert min(modes["white_jpeg"].size) > 200 and modes["original"].size == (28, 28)


@pytest.fixture(scope="module")
def real_test_images():
    from fmnist_lit import fashion_mnist as D
    from tests.helpers import ROOT

    if not all((ROOT / "data" / "FashionMNIST" / "raw" / n).exists() for n in D.MD5):
        pytest.skip("real Fashion-MNIST not in data/")
    return D.load_split(ROOT / "data", train=False)[0]


def test_the_dataset_has_the_properties_the_conversion_reproduces(real_test_images):
    """photo.py's docstring: longest side 28 px, pad left/top = ceil((28 - size) / 2), brightest pixel 254-255."""
    x = real_test_images
    fg = x > 0
    # columns, rows
    for axis in (1, 2):
        # (N, 28)
        m = fg.any(axis)
        first, last = m.float().argmax(1), 27 - m.flip(1).float().argmax(1)
        size = last - first + 1
        short = size < 27
        assert (first[short] == (28 - size[short] + 1) // 2).float().mean() > 0.98
    longest = torch.maximum(fg.any(1).sum(1), fg.any(2).sum(1))
    assert (longest == 28).float().mean() > 0.97
    assert (x.flatten(1).max(1).values >= 254).float().mean() > 0.99


def test_photos_of_real_images_come_back_close_to_the_original(tmp_path, real_test_images):
    """White JPEG and RGBA cut-out of 10 real test images: same bounding box (+-1 px), small pixel difference."""
    x = real_test_images[:10]
    root = photo_set.write_set(x.numpy(), np.zeros(10, int), tmp_path, variants=("white_jpeg", "rgba_png"))
    for v, suffix in (("white_jpeg", ".jpg"), ("rgba_png", ".png")):
        diffs = []
        for i in range(10):
            y, inverted = to_fmnist(root / v / f"{i:05d}{suffix}")
            assert inverted and all(abs(a - b) <= 1 for a, b in zip(nonzero_box(y), nonzero_box(x[i])))
            diffs.append((y.float() - x[i].float()).abs().mean())
        assert torch.stack(diffs).mean() < 15, (v, torch.stack(diffs))
