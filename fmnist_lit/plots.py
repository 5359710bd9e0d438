"""Every figure of the evaluation report and of the TensorBoard callback (matplotlib, non-interactive backend).

Functions take plain tensors/lists and return a `Figure`; callers save it (report/) or hand it to TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers / CI; must precede pyplot
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

WRONG, RIGHT = "#c0392b", "#1e6b34"  # red / dark green titles on image grids


def _matrix_panel(ax, m: torch.Tensor, classes: Sequence[str], fmt: str, title: str, fig: Figure) -> None:
    im = ax.imshow(m.numpy(), cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    n = len(classes)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), classes, fontsize=9)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    hi = float(m.max()) or 1.0
    for i in range(n):
        for j in range(n):
            v = float(m[i, j])  # exact zeros as "0": the few non-zero cells stand out
            ax.text(j, i, format(v, fmt) if v else "0", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.55 * hi else "black")


def confusion_matrix_figure(cm: torch.Tensor, classes: Sequence[str], title: str = "Confusion matrix") -> Figure:
    """cm: (C, C) counts, rows = true class. Left: counts; right: each row divided by its total (= recall)."""
    cm = cm.to(torch.float64)
    norm = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(16, 7.2))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.9, wspace=0.22)  # no layout engine: faster
    _matrix_panel(a, cm, classes, ".0f", "Counts", fig)
    _matrix_panel(b, norm, classes, ".2f", "Row-normalised (diagonal = recall)", fig)
    fig.suptitle(f"{title} ({int(cm.sum())} images)", fontsize=14)
    return fig


def _epoch_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()


def curves_figure(history: dict[str, dict[int, float]]) -> Figure:
    """history: metric name -> {epoch: value}; draws train/val accuracy and loss per epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for ax, what in zip(axes, ("acc", "loss")):
        for split, style in (("train", "o-"), ("val", "s-")):
            h = history.get(f"{split}/{what}", {})
            if h:
                ax.plot([e + 1 for e in h], list(h.values()), style, label=split)
        _epoch_axis(ax, "Accuracy" if what == "acc" else "Cross-entropy loss",
                    f"{'Accuracy' if what == 'acc' else 'Loss'} per epoch")
    return fig


def val_test_loss_figure(val: dict[int, float], test: dict[int, float]) -> Figure:
    """Seed 003's plot. The test curve is for information only: it never selects a checkpoint."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot([e + 1 for e in val], list(val.values()), "s-", label="validation")
    ax.plot([e + 1 for e in test], list(test.values()), "o-", label="test (not used for selection)")
    _epoch_axis(ax, "Cross-entropy loss", "Validation and test loss per epoch")
    return fig


def pr_curves_figure(curves: Sequence[tuple[torch.Tensor, torch.Tensor]], ap: torch.Tensor,
                     classes: Sequence[str]) -> Figure:
    """curves[k] = (precision, recall) of class k against the rest; ap: (C,) average precision."""
    fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for k, ((p, r), name) in enumerate(zip(curves, classes)):
        ax.plot(r.numpy(), p.numpy(), color=colors[k % 10], lw=1.6, label=f"{name} (AP {float(ap[k]):.3f})")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall, one class vs rest (test set), mean AP {float(ap.mean()):.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, title="class (average precision)")
    return fig


def image_grid(images: torch.Tensor, titles: Sequence[str], title: str, colors: Sequence[str] | None = None,
               ncols: int = 8) -> Figure:
    """images: uint8 (N, 28, 28); one small titled tile each (titles may hold 2-3 lines).

    One mosaic drawn in a single axes (32 subplots with a layout engine took seconds to render)."""
    n, tile_in, font = len(images), 1.75, 8.5
    nrows = max(1, -(-n // ncols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    w = 32  # pixels per tile column: the 28-pixel image + a 4-pixel gap
    per_in = w / tile_in  # mosaic pixels per inch of figure
    head = int(lines * font * 1.3 / 72 * per_in) + 3  # room for the title lines above each image
    h = 28 + head
    mosaic = torch.zeros(nrows * h, ncols * w, dtype=torch.uint8)  # 0 = white under gray_r
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * h + head:(r + 1) * h, c * w + 2:c * w + 30] = images[i]
    fig = plt.figure(figsize=(ncols * tile_in, nrows * h / per_in + 0.55))
    ax = fig.add_axes((0, 0, 1, nrows * h / per_in / fig.get_figheight()))
    ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
    ax.axis("off")
    for i in range(n):
        r, c = divmod(i, ncols)
        ax.text(c * w + 16, r * h + head - 1.5, titles[i], ha="center", va="bottom", fontsize=font,
                color=colors[i] if colors else "black", linespacing=1.1,
                fontweight="bold" if colors and colors[i] == WRONG else "normal")
    if n == 0:
        ax.text(ncols * w / 2, h / 2, "(none)", fontsize=14, ha="center", va="center")
    fig.suptitle(title, fontsize=13, y=1 - 0.12 / fig.get_figheight())
    return fig


def _short(row: dict) -> str:
    return f"{row['type']}" + (f"  {row['args']}" if row["args"] else "")


def architecture_figure(rows: Sequence[dict], title: str) -> Figure:
    """rows: the layer table (type, args, out_shape, params), drawn top to bottom as a stack of boxes."""
    palette = {"Conv2d": "#aed6f1", "BatchNorm2d": "#f9e79f", "ReLU": "#d5f5e3", "MaxPool2d": "#f5b7b1",
               "AdaptiveAvgPool2d": "#f5b7b1", "Linear": "#d2b4de", "Dropout": "#e5e7e9", "Flatten": "#e5e7e9"}
    rows = [{"type": "Input", "args": "", "out_shape": "1×28×28", "params": 0}, *rows]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(8.5, 0.48 * n + 1.0))
    ax.set_xlim(0, 10)
    ax.set_ylim(-n + 0.3, 1.2)
    ax.axis("off")
    for i, r in enumerate(rows):
        y = -i
        box = FancyBboxPatch((0.3, y - 0.32), 6.0, 0.64, boxstyle="round,pad=0.02,rounding_size=0.12",
                             fc=palette.get(r["type"], "#fdebd0"), ec="#555555", lw=0.8)
        ax.add_patch(box)
        ax.text(3.3, y, _short(r), ha="center", va="center", fontsize=9.5)
        ax.text(6.6, y, f"→ {r['out_shape']}", ha="left", va="center", fontsize=9, family="monospace")
        if r["params"]:
            ax.text(9.9, y, f"{r['params']:,} params", ha="right", va="center", fontsize=8.5, color="#555555")
        if i:
            ax.annotate("", xy=(3.3, y + 0.33), xytext=(3.3, y + 0.67), arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.text(0.3, 0.85, title, fontsize=12, weight="bold", va="center")
    ax.text(6.6, 0.5, "output shape", fontsize=8.5, color="#555555", va="center")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=0.99)  # the axes is the whole figure
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
