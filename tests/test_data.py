import gzip
import shutil

import pytest
import torch

from fmnist_lit import batches as B
from fmnist_lit import fashion_mnist as D
from fmnist_lit.csv_data import CSVFormatError, read_csv, write_csv
from fmnist_lit.data import _PILDataset
from fmnist_lit.synthetic import make_images
from tests.helpers import make_datamodule


def copy_root(src, dst):
    shutil.copytree(src, dst)
    return dst / "FashionMNIST" / "raw"


def test_verify_ok_without_md5(tiny_root):
    D.verify_raw(tiny_root / "FashionMNIST" / "raw", check_md5=False)


def test_synthetic_files_fail_md5(tiny_root):
    with pytest.raises(D.DatasetError, match="md5 mismatch"):
        D.verify_raw(tiny_root / "FashionMNIST" / "raw", check_md5=True)


def test_truncated_file_named(tiny_root, tmp_path):
    raw = copy_root(tiny_root, tmp_path / "r")
    f = raw / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(D.DatasetError, match="train-images-idx3-ubyte: truncated"):
        D.verify_raw(raw, check_md5=False)


def test_bad_header_named(tiny_root, tmp_path):
    raw = copy_root(tiny_root, tmp_path / "r")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!" * 4)
    with pytest.raises(D.DatasetError, match="t10k-labels-idx1-ubyte: not an IDX label file"):
        D.verify_raw(raw, check_md5=False)


def test_label_out_of_range_is_named_without_md5(tiny_root, tmp_path):
    """data.check_md5=false (custom data): the labels are still checked, before a batch is made."""
    raw = copy_root(tiny_root, tmp_path / "r")
    f = raw / "train-labels-idx1-ubyte"
    labels = bytearray(f.read_bytes())
    # item 7 (after the 8-byte header): a value no class has
    labels[8 + 7] = 200
    f.write_bytes(bytes(labels))
    dm = make_datamodule(tmp_path / "r", tmp_path / "cfg", check_md5=False)
    with pytest.raises(D.DatasetError) as e:
        dm.prepare_data()
    message = str(e.value)
    assert f"{f}: label 200 at item 7 is outside 0..9" in message and "\n" not in message


def test_missing_file_gives_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(D.DatasetError) as e:
        D.prepare_raw(tmp_path / "empty", download=False)
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "data.download=true" in str(e.value)


def test_make_data_refusal_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`make data`'s command (`python -m fmnist_lit.fashion_mnist`) with no source: exit 2, one `error:` line."""
    monkeypatch.setattr(D, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(SystemExit) as e:
        D.main(["--root", str(tmp_path / "root"), "--no-download"])
    err = capsys.readouterr().err.strip()
    assert (
        e.value.code == 2 and err.startswith("error: Fashion-MNIST files missing under") and "\n" not in err
    )
    assert not (tmp_path / "root").exists()


def test_partial_data_rejected(tiny_root, tmp_path, monkeypatch):
    """Three of four files present and no other source: an error, never training on partial data."""
    monkeypatch.setattr(D, "SYSTEM_DIR", tmp_path / "nowhere")
    raw = copy_root(tiny_root, tmp_path / "r")
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(D.DatasetError, match=r"missing under .*\(t10k-images-idx3-ubyte\)"):
        D.prepare_raw(tmp_path / "r", download=False, check_md5=False)


def test_system_copy_is_decompressed(tiny_root, tmp_path, monkeypatch):
    sysdir = tmp_path / "sys"
    sysdir.mkdir()
    for name in D.MD5:
        with (
            (tiny_root / "FashionMNIST" / "raw" / name).open("rb") as src,
            gzip.open(sysdir / f"{name}.gz", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    monkeypatch.setattr(D, "SYSTEM_DIR", sysdir)
    raw = D.prepare_raw(tmp_path / "root", download=False, check_md5=False)
    for name in D.MD5:
        assert (raw / name).read_bytes() == (tiny_root / "FashionMNIST" / "raw" / name).read_bytes()


def test_split_identical_and_disjoint(tiny_root, tmp_path):
    def build():
        dm = make_datamodule(tiny_root, tmp_path, val_size=100)
        dm.setup()
        return dm

    a, b = build(), build()
    assert torch.equal(a.val_idx, b.val_idx) and torch.equal(a.train_idx, b.train_idx)
    assert len(set(a.val_idx.tolist()) & set(a.train_idx.tolist())) == 0
    assert len(a.val_idx) + len(a.train_idx) == 600
    # the test set is separate and whole
    assert len(a.test_x) == 200


def test_split_seed_changes_split(tiny_root, tmp_path):
    dms = [make_datamodule(tiny_root, tmp_path, split_seed=s) for s in (0, 1)]
    for dm in dms:
        dm.setup()
    assert not torch.equal(dms[0].val_idx, dms[1].val_idx)


@pytest.mark.parametrize("val_size", [-1, 600, 10_000])
def test_bad_val_size(tiny_root, tmp_path, val_size):
    dm = make_datamodule(tiny_root, tmp_path, val_size=val_size)
    with pytest.raises(D.DatasetError, match="val_size"):
        dm.setup()


def test_tensor_batches_cover_epoch_once():
    x, y = torch.arange(103).view(-1, 1), torch.arange(103)
    tb = B.TensorBatches(x, y, batch_size=10, shuffle=True, seed=0)
    assert len(tb) == 11
    seen = torch.cat([b[1] for b in tb])
    assert sorted(seen.tolist()) == list(range(103))
    # reshuffled each epoch
    assert not torch.equal(seen, torch.cat([b[1] for b in tb]))


def test_training_shards_have_equal_steps():
    """DDP training: every rank must run the same number of steps, and the shares must not overlap."""
    x, y = torch.arange(51).view(-1, 1), torch.arange(51)
    shards = [B.TensorBatches(x, y, 5, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    seen = [torch.cat([b[1] for b in s]) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 25 and not set(seen[0].tolist()) & set(seen[1].tolist())


def test_tensor_batches_ranks_are_disjoint():
    x, y = torch.arange(50).view(-1, 1), torch.arange(50)
    shares = [
        torch.cat([b[1] for b in B.TensorBatches(x, y, 7, shuffle=False, rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert sorted(torch.cat(shares).tolist()) == list(range(50))


def test_normalize_and_augment_shapes():
    x = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    z = B.normalize_uint8(x)
    assert z.shape == (8, 1, 28, 28) and z.dtype == torch.float32
    assert torch.allclose(z[0, 0], (x[0].float() / 255 - B.MEAN) / B.STD)
    a = B.augment(z, pad=2, flip=True)
    assert a.shape == z.shape
    assert torch.equal(B.augment(z, pad=0, flip=False), z)


def test_augment_translation_is_a_shift():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1
    torch.manual_seed(0)
    out = B.augment(x, pad=2, flip=False)
    r, c = (out[0, 0] == 1).nonzero()[0].tolist()
    assert abs(r - 10) <= 2 and abs(c - 10) <= 2 and out.sum() == 1


def test_pil_path_matches_in_memory_path(tiny_root, tmp_path):
    dm = make_datamodule(tiny_root, tmp_path)
    dm.setup()
    img, _ = _PILDataset(dm.test_x, dm.test_y)[3]
    assert torch.allclose(img, B.normalize_uint8(dm.test_x[3:4])[0], atol=1e-6)


@pytest.mark.parametrize(
    ("device", "keep", "expected"), [("cpu", True, "cpu"), ("meta", True, "meta"), ("meta", False, "cpu")]
)
def test_in_memory_path_keeps_splits_on_the_accelerator(tiny_root, tmp_path, device, keep, expected):
    # no GPU in CI: the "meta" device stands in for one (any non-CPU root device of the trainer)
    from types import SimpleNamespace

    dm = make_datamodule(tiny_root, tmp_path, batch_size=32, keep_on_device=keep)
    dm.setup()
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)),
        global_rank=0,
        world_size=1,
        current_epoch=0,
        overfit_batches=0,
    )
    for loader in (dm.train_dataloader(), *dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.device.type == y.device.type == expected and x.dtype == torch.uint8
        assert x.shape[1:] == (28, 28) and len(x) == len(y) == min(loader.batch_size, len(loader.x))
    # the module's own tensors stay on the host: the report reads dm.test_x
    assert dm.train_x.device.type == dm.test_x.device.type == "cpu"


# --- CSV (seed 003's format) ---


def test_csv_roundtrip(tmp_path):
    x, y = make_images(20, 3)
    write_csv(tmp_path / "a.csv", x, y)
    x2, y2 = read_csv(tmp_path / "a.csv")
    assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("3," + ",".join(["0"] * 783), "expected 785 columns"),
        ("3," + ",".join(["0"] * 783) + ",abc", "not an integer"),
        ("3," + ",".join(["0"] * 783) + ",256", "pixel784 = 256 is outside 0..255"),
        ("10," + ",".join(["0"] * 784), "label 10 is outside 0..9"),
        ("-1," + ",".join(["0"] * 784), "label -1 is outside 0..9"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, bad_row, message):
    x, y = make_images(5, 4)
    path = tmp_path / "bad.csv"
    write_csv(path, x, y)
    lines = path.read_text().splitlines()
    # becomes line 5
    lines.insert(4, bad_row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CSVFormatError, match=rf"bad.csv:5: .*{message}"):
        read_csv(path)


def test_csv_with_every_field_quoted(tmp_path):
    """RFC 4180 quoting, as some spreadsheets export: `"label","pixel1",...` then `"5","0",...`."""
    x, y = make_images(6, 7)
    write_csv(tmp_path / "plain.csv", x, y)
    lines = (tmp_path / "plain.csv").read_text().splitlines()
    quoted = [",".join(f'"{v}"' for v in line.split(",")) for line in lines]
    (tmp_path / "quoted.csv").write_text("\r\n".join(quoted) + "\r\n")
    x2, y2 = read_csv(tmp_path / "quoted.csv")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # a quoted first row of data is still no header
    (tmp_path / "nohdr.csv").write_text("\n".join(quoted[1:]) + "\n")
    with pytest.raises(CSVFormatError, match="nohdr.csv:1: expected a header"):
        read_csv(tmp_path / "nohdr.csv")


def test_csv_missing_header(tmp_path):
    path = tmp_path / "nohdr.csv"
    path.write_text("1," + ",".join(["0"] * 784) + "\n")
    with pytest.raises(CSVFormatError, match="nohdr.csv:1: expected a header"):
        read_csv(path)


def test_csv_datamodule(tmp_path):
    write_csv(tmp_path / "train.csv", *make_images(300, 5))
    write_csv(tmp_path / "test.csv", *make_images(50, 6))
    dm = make_datamodule(
        tmp_path,
        tmp_path / "cfg",
        train_csv=str(tmp_path / "train.csv"),
        test_csv=str(tmp_path / "test.csv"),
        val_size=30,
    )
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_x) == 270 and len(dm.val_x) == 30 and len(dm.test_x) == 50


def test_the_data_source_is_logged_once(tmp_path, tiny_root, caplog, monkeypatch):
    """A run says where its data is and where it came from (a mistyped data.root gets a fresh copy: visible)."""
    caplog.set_level("INFO", logger="fmnist_lit.fashion_mnist")
    monkeypatch.setattr(D, "_SAID", set())
    for _ in range(3):
        D.prepare_raw(tiny_root, download=False, check_md5=False)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: ")]
    assert said == [f"data: {(tiny_root / 'FashionMNIST' / 'raw').resolve()}, from the files already there"]
