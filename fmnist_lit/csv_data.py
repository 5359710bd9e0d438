"""Kaggle-style Fashion-MNIST CSV (seed 003): a header line, then `label,pixel1,...,pixel784` per image.

Every malformed row is an error naming the file and its 1-based line number; nothing is clipped or skipped but
empty lines. A UTF-8 byte-order mark (Excel's "CSV UTF-8") is allowed, and so are quoted fields (RFC 4180:
`"5","0",...`, as some spreadsheets export every field); `#` starts no comment (a `#` line is a malformed row).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from fmnist_lit.utils import UserError

N_COLS = 1 + 28 * 28
# UTF-8, with or without a byte-order mark
ENCODING = "utf-8-sig"


class CSVFormatError(UserError):
    pass


def _find_bad_line(path: Path) -> str:
    """Slow exact scan used only after the fast parser failed or found bad values: the first offending line (its
    number in the file, empty lines counted) and why."""
    with path.open(newline="", encoding=ENCODING) as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                lineno = reader.line_num
                if lineno == 1 or not row:
                    # the header; empty lines (skipped by the fast parser too)
                    continue
                if row[0].lstrip().startswith("#"):
                    return f"{path}:{lineno}: a `#` line: this format has no comments (delete the line)"
                if len(row) != N_COLS:
                    return (
                        f"{path}:{lineno}: expected {N_COLS} columns (label + 784 pixels), found {len(row)}"
                    )
                for col, v in enumerate(row):
                    try:
                        n = int(v)
                    except ValueError:
                        return f"{path}:{lineno}: column {col + 1} is not an integer: {v[:40]!r}"
                    if col == 0 and not 0 <= n <= 9:
                        return f"{path}:{lineno}: label {n} is outside 0..9"
                    if col > 0 and not 0 <= n <= 255:
                        return f"{path}:{lineno}: pixel{col} = {n} is outside 0..255"
        except csv.Error as e:
            # e.g. a field over the csv module's limit (128 KiB): not a label,pixel row
            return f"{path}:{reader.line_num}: not a CSV row of label,pixel1..pixel784 ({e})"
    return f"{path}: could not be parsed as label,pixel1..pixel784 CSV"


def read_csv(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images (N, 28, 28) uint8, labels (N,) int64."""
    path = Path(path)
    if not path.is_file():
        raise CSVFormatError(f"{path}: CSV file not found")
    try:
        with path.open(encoding=ENCODING) as f:
            header = f.readline(1024)
    except (OSError, UnicodeDecodeError) as e:
        raise CSVFormatError(f"{path}: not a readable UTF-8 text file ({e})") from None
    if header.strip() and header.split(",")[0].strip().strip('"').lstrip("-").isdigit():
        raise CSVFormatError(f"{path}:1: expected a header line (label,pixel1,...), found data")
    try:
        # fast vectorised parse on any problem fall back to the line-by-line scan that names the bad line
        a = np.loadtxt(
            path,
            delimiter=",",
            quotechar='"',
            skiprows=1,
            dtype=np.int64,
            ndmin=2,
            comments=None,
            encoding=ENCODING,
        )
    except (ValueError, UnicodeDecodeError):
        raise CSVFormatError(_find_bad_line(path)) from None
    if a.shape[0] == 0:
        raise CSVFormatError(f"{path}: no data rows after the header")
    if a.shape[1] != N_COLS:
        raise CSVFormatError(_find_bad_line(path))
    if ((a[:, 0] < 0) | (a[:, 0] > 9)).any() or ((a[:, 1:] < 0) | (a[:, 1:] > 255)).any():
        # the scan gives the file's line number
        raise CSVFormatError(_find_bad_line(path))
    images = torch.from_numpy(a[:, 1:].astype(np.uint8)).reshape(-1, 28, 28)
    return images, torch.from_numpy(a[:, 0].copy())


def write_csv(path: str | Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The inverse of read_csv (used by tests and to export the IDX data)."""
    flat = images.reshape(len(images), -1).numpy()
    header = "label," + ",".join(f"pixel{i}" for i in range(1, N_COLS))
    np.savetxt(
        path, np.column_stack([labels.numpy(), flat]), fmt="%d", delimiter=",", header=header, comments=""
    )
