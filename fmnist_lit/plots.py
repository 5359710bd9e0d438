"""Every figure of the evaluation report and of the TensorBoard callback (matplotlib, non-interactive backend).

Functions take plain tensors/lists and return a `Figure`; callers save it (report/) or hand it to TensorBoard.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib

# no display on servers / CI; must precede pyplot
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

# red / dark green titles on image grids
WRONG, RIGHT = "#c0392b", "#1e6b34"


def _matrix_panel(
    ax, m: torch.Tensor, classes: Sequence[str], fmt: str, title: str, fig: Figure, errors_only: bool = False
) -> None:
    """errors_only: colour the off-diagonal cells on their own scale (the errors), the diagonal grey with its
    numbers, so a 40-image confusion is not washed out by 900-image diagonal cells."""
    n = len(classes)
    off = ~torch.eye(n, dtype=torch.bool)
    shown = torch.where(off, m, torch.nan) if errors_only else m
    top = float(m[off].max()) if errors_only else float(m.max())
    im = ax.imshow(shown.numpy(), cmap="Reds" if errors_only else "Blues", vmin=0, vmax=top or 1.0)
    # the correct predictions: grey squares under their counts
    if errors_only:
        ax.imshow(torch.where(off, torch.nan, 1.0).numpy(), cmap="Greys", vmin=0, vmax=4)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="wrong predictions" if errors_only else None)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), classes, fontsize=9)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    hi = top or 1.0
    for i in range(n):
        for j in range(n):
            # exact zeros as "0": the few non-zero cells stand out
            v = float(m[i, j])
            dark = v > 0.55 * hi and (i != j or not errors_only)
            ax.text(
                j,
                i,
                format(v, fmt) if v else "0",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
                fontweight="bold" if errors_only and i == j else "normal",
            )


def confusion_matrix_figure(
    cm: torch.Tensor, classes: Sequence[str], title: str = "Confusion matrix"
) -> Figure:
    """cm: (C, C) counts, rows = true class. Left: counts, the errors coloured on their own scale (the diagonal,
    correct, in grey); right: each row divided by its total (diagonal = recall)."""
    cm = cm.to(torch.float64)
    norm = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(16, 7.2))
    # no layout engine: faster
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.9, wspace=0.22)
    _matrix_panel(
        a, cm, classes, ".0f", "Counts: errors in red, correct (diagonal) in grey", fig, errors_only=True
    )
    _matrix_panel(b, norm, classes, ".2f", "Row-normalised (diagonal = recall)", fig)
    fig.suptitle(f"{title} ({int(cm.sum())} images, {int(cm.sum() - cm.trace())} wrong)", fontsize=14)
    return fig


def _epoch_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _line(ax, h: dict[float, float], style: str, **kw) -> None:
    if not h:
        return
    if len(h) == 1:
        # a line through one point draws nothing: the point gets a marker and no line, in the legend too
        style = style.strip("-:") or "o"
    ax.plot(list(h), list(h.values()), style, **kw)


def curves_figure(
    epochs: dict[str, dict[int, float]],
    steps: dict[str, dict[float, float]] | None = None,
    selected: int | None = None,
    selected_label: str = "tested",
) -> Figure:
    """epochs: metric -> {epoch (from 1): value}; steps: metric -> {fractional epoch: value} (per-step logs).

    Accuracy, then loss, then the learning rate. The loss panel compares like with like: the plain cross-entropy of
    training (train/ce) and validation; the training objective with label smoothing (train/loss), when it differs,
    is drawn apart, dashed and labelled, never as `train`. `selected`: the epoch whose weights were tested."""
    steps = steps or {}
    lr = next((h for k, h in steps.items() if k.startswith("lr-") or k == "train/lr"), None)
    fig, axes = plt.subplots(1, 3 if lr else 2, figsize=(17 if lr else 12, 4.5), layout="constrained")
    acc_ax, loss_ax = axes[0], axes[1]
    _line(acc_ax, epochs.get("train/acc", {}), "o-", label="train (epoch mean, in training mode)")
    _line(acc_ax, epochs.get("val/acc", {}), "s-", label="validation")
    ce, objective = epochs.get("train/ce", {}), epochs.get("train/loss", {})
    smoothed = any(abs(objective[e] - ce[e]) > 1e-6 for e in ce if e in objective)
    _line(loss_ax, ce, "o-", label="train cross-entropy")
    _line(loss_ax, epochs.get("val/loss", {}), "s-", label="validation cross-entropy")
    # the objective differs from the cross-entropy only with label smoothing
    if smoothed:
        _line(loss_ax, objective, "--", color="0.45", label="train objective (with label smoothing)")
    per_step = steps.get("train/loss_step", {})
    _line(
        loss_ax,
        per_step,
        "-",
        color="0.45" if smoothed else "tab:blue",
        lw=0.7,
        alpha=0.6,
        label=f"train {'objective' if smoothed else 'cross-entropy'}, mean between step logs",
    )
    # one x-axis for all panels: the end of epoch k is at k, the run starts at 0 (a 1-epoch run: ticks 0 and 1)
    last = max([*epochs.get("val/acc", {}), *epochs.get("train/acc", {}), 1])
    for ax in axes:
        ax.set_xlim(0, last * 1.02)
    for ax in (acc_ax, loss_ax):
        if selected is not None:
            ax.axvline(
                selected, color="tab:red", ls=":", lw=1.5, label=f"{selected_label} (epoch {selected})"
            )
    _epoch_axis(acc_ax, "Accuracy", "Accuracy per epoch")
    _epoch_axis(loss_ax, "Loss", "Loss per epoch")
    if lr:
        _line(axes[2], lr, "-", color="tab:green", label="learning rate")
        _epoch_axis(axes[2], "Learning rate", "Learning rate (per logged step)")
    return fig


def val_test_loss_figure(val: dict[int, float], test: dict[int, float]) -> Figure:
    """Seed 003's plot; epochs from 1. The test curve is for information only: it never selects a checkpoint."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(list(val), list(val.values()), "s-", label="validation")
    ax.plot(list(test), list(test.values()), "o-", label="test (not used for selection)")
    _epoch_axis(ax, "Cross-entropy loss", "Validation and test loss per epoch")
    return fig


def pr_curves_figure(
    curves: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ap: torch.Tensor,
    classes: Sequence[str],
    zoom: float = 0.9,
) -> Figure:
    """curves[k] = (precision, recall) of class k against the rest; ap: (C,) average precision.
    Left: the whole square; right: the corner above `zoom` in both, where the near-perfect classes lie on top of
    each other at full scale."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 7), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    # legend from best to worst
    order = ap.argsort(descending=True).tolist()
    for ax, lo in zip(axes, (0.0, zoom)):
        for k in order:
            p, r = curves[k]
            ax.plot(
                r.numpy(),
                p.numpy(),
                color=colors[k % 10],
                lw=1.6,
                label=f"{classes[k]} (AP {float(ap[k]):.3f})",
            )
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
        ax.set_xlim(lo, 1.0)
        ax.set_ylim(lo, 1.0 + (1 - lo) * 0.02)
        ax.grid(alpha=0.3)
    axes[0].set_title("Full scale")
    axes[1].set_title(f"Zoomed: recall and precision from {zoom:.1f} to 1")
    axes[0].legend(loc="lower left", fontsize=9, title="class (average precision)")
    fig.suptitle(
        f"Precision-recall, one class vs rest (test set), mean AP {float(ap.mean()):.3f}", fontsize=13
    )
    return fig


def reliability_figure(panels: Sequence[tuple[str, dict[str, list[float]]]]) -> Figure:
    """panels: (title, bins) with bins from fmnist_lit.calibration.reliability (per confidence bin: mean
    confidence, accuracy, count). Top: accuracy per bin against the diagonal of perfect calibration; bottom: how
    many images fall in each bin (log scale)."""
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(5.5 * len(panels), 6.2),
        height_ratios=[3, 1],
        squeeze=False,
        layout="constrained",
    )
    for (title, b), top, bottom in zip(panels, axes[0], axes[1]):
        n = len(b["count"])
        left = [k / n for k in range(n)]
        top.bar(
            left,
            [0 if math.isnan(a) else a for a in b["accuracy"]],
            width=1 / n,
            align="edge",
            color="#5dade2",
            edgecolor="#1b4f72",
            lw=0.6,
            label="accuracy in the bin",
        )
        # NaN: empty bin
        conf = [(c, k) for k, c in enumerate(b["confidence"]) if not math.isnan(c)]
        top.plot(
            [c for c, _ in conf],
            [b["accuracy"][k] for _, k in conf],
            "o",
            color="#c0392b",
            ms=3.5,
            label="(mean confidence, accuracy)",
        )
        top.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfectly calibrated")
        top.set(xlim=(0, 1), ylim=(0, 1.03), ylabel="Accuracy", title=title)
        top.legend(loc="upper left", fontsize=8.5)
        bottom.bar(left, b["count"], width=1 / n, align="edge", color="#aab7b8", edgecolor="#555555", lw=0.5)
        bottom.set(xlim=(0, 1), yscale="log", xlabel="Confidence (top-class probability)", ylabel="Images")
    fig.suptitle("Reliability diagram, test set", fontsize=13)
    return fig


def robustness_figure(clean: float, accuracy: dict[str, dict[str, float]]) -> Figure:
    """accuracy: corruption -> {severity ("1".."3"): test accuracy}; severity 0 is the clean test set."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for k, (name, by_level) in enumerate(accuracy.items()):
        levels = [0, *map(int, by_level)]
        ax.plot(levels, [clean, *by_level.values()], "o-", color=colors[k % 10], label=name.replace("_", " "))
    ax.axhline(0.1, color="gray", ls=":", lw=1, label="chance (10 classes)")
    ax.set_xticks(range(4), ["clean", "1", "2", "3"])
    ax.set(xlabel="Severity", ylabel="Test accuracy", ylim=(0, 1), title="Test accuracy under corruptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str],
    title: str,
    colors: Sequence[str] | None = None,
    ncols: int = 8,
) -> Figure:
    """images: uint8 (N, 28, 28); one small titled tile each (titles may hold 2-3 lines).

    One mosaic drawn in a single axes (32 subplots with a layout engine took seconds to render)."""
    n, tile_in, font = len(images), 1.75, 8.5
    nrows = max(1, -(-n // ncols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    # pixels per tile column: the 28-pixel image + a 4-pixel gap
    w = 32
    # mosaic pixels per inch of figure
    per_in = w / tile_in
    # room for the title lines above each image
    head = int(lines * font * 1.3 / 72 * per_in) + 3
    h = 28 + head
    # 0 = white under gray_r
    mosaic = torch.zeros(nrows * h, ncols * w, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * h + head : (r + 1) * h, c * w + 2 : c * w + 30] = images[i]
    # the title wrapped to the mosaic's width (a 13-point character is about 0.1 inch wide), a line each 0.22 inch
    heading = "\n".join(
        line for part in title.split("\n") for line in textwrap.wrap(part, int(ncols * tile_in / 0.1))
    )
    fig = plt.figure(figsize=(ncols * tile_in, nrows * h / per_in + 0.3 + 0.22 * (heading.count("\n") + 1)))
    ax = fig.add_axes((0, 0, 1, nrows * h / per_in / fig.get_figheight()))
    ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
    ax.axis("off")
    for i in range(n):
        r, c = divmod(i, ncols)
        ax.text(
            c * w + 16,
            r * h + head - 1.5,
            titles[i],
            ha="center",
            va="bottom",
            fontsize=font,
            color=colors[i] if colors else "black",
            linespacing=1.1,
            fontweight="bold" if colors and colors[i] == WRONG else "normal",
        )
    if n == 0:
        ax.text(ncols * w / 2, h / 2, "(none)", fontsize=14, ha="center", va="center")
    fig.suptitle(heading, fontsize=13, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def _short(row: dict) -> str:
    return f"{row['type']}" + (f"  {row['args']}" if row["args"] else "")


def architecture_figure(rows: Sequence[dict], title: str) -> Figure:
    """rows: the layer table (type, args, out_shape, params), drawn top to bottom as a stack of boxes."""
    palette = {
        "Conv2d": "#aed6f1",
        "BatchNorm2d": "#f9e79f",
        "ReLU": "#d5f5e3",
        "MaxPool2d": "#f5b7b1",
        "AdaptiveAvgPool2d": "#f5b7b1",
        "Linear": "#d2b4de",
        "Dropout": "#e5e7e9",
        "Flatten": "#e5e7e9",
    }
    rows = [{"type": "Input", "args": "", "out_shape": "1×28×28", "params": 0}, *rows]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(8.5, 0.48 * n + 1.0))
    ax.set_xlim(0, 10)
    ax.set_ylim(-n + 0.3, 1.2)
    ax.axis("off")
    for i, r in enumerate(rows):
        y = -i
        box = FancyBboxPatch(
            (0.3, y - 0.32),
            6.0,
            0.64,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            fc=palette.get(r["type"], "#fdebd0"),
            ec="#555555",
            lw=0.8,
        )
        ax.add_patch(box)
        ax.text(3.3, y, _short(r), ha="center", va="center", fontsize=9.5)
        ax.text(6.6, y, f"→ {r['out_shape']}", ha="left", va="center", fontsize=9, family="monospace")
        if r["params"]:
            ax.text(9.9, y, f"{r['params']:,} params", ha="right", va="center", fontsize=8.5, color="#555555")
        if i:
            ax.annotate(
                "", xy=(3.3, y + 0.33), xytext=(3.3, y + 0.67), arrowprops={"arrowstyle": "->", "lw": 0.8}
            )
    ax.text(0.3, 0.85, title, fontsize=12, weight="bold", va="center")
    ax.text(6.6, 0.5, "output shape", fontsize=8.5, color="#555555", va="center")
    # the axes is the whole figure
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=0.99)
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
