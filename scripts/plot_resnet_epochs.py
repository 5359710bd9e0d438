"""Test accuracy against seconds from launch, one point per epoch, of the ResNet runs in docs/RESULTS.md.

    python scripts/plot_resnet_epochs.py     # docs/resnet_epochs.csv -> docs/figures/resnet_acc_vs_wall.png

The CSV has one row per epoch end: recipe (experiment=...), seed, timing (`plain`: the command as README gives it;
`test_each_epoch`: the same run timed with a test pass after every epoch), epoch (from 1), s_from_launch, val_acc
and test_acc, as scripts/time_to_accuracy.py prints them for each run folder.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("recipe", "seed", "timing", "epoch", "s_from_launch", "val_acc", "test_acc")
COLORS = {"resnet": "tab:blue", "resnet_short": "tab:orange"}
# the plain command solid; the same runs with a test pass per epoch (slower, same accuracies) dashed
STYLES = {"plain": ("-", 1.0), "test_each_epoch": ("--", 0.45)}


def read_runs(path: Path) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """(recipe, seed, timing) -> [(seconds from launch, test accuracy in %)] in epoch order."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        rows = sorted(reader, key=lambda r: int(r["epoch"]))
    runs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for r in rows:
        runs.setdefault((r["recipe"], r["seed"], r["timing"]), []).append(
            (float(r["s_from_launch"]), 100 * float(r["test_acc"]))
        )
    return runs


def draw(runs: dict[tuple[str, str, str], list[tuple[float, float]]], out: Path) -> None:
    # a Figure without pyplot: no GUI backend, nothing left open
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    labelled = set()
    for (recipe, seed, timing), points in sorted(runs.items()):
        style, alpha = STYLES.get(timing, (":", 0.6))
        # one legend entry per recipe and timing; the seeds share it
        label = f"experiment={recipe}" + (", a test pass per epoch" if timing == "test_each_epoch" else "")
        ax.plot(
            *zip(*points),
            style,
            color=COLORS.get(recipe, "tab:gray"),
            alpha=alpha,
            lw=1.2,
            label=None if label in labelled else label,
        )
        labelled.add(label)
    for target in (94, 95):
        ax.axhline(target, color="black", lw=0.6, ls=":")
    ax.set(
        xlabel="seconds from launch (epoch ends)",
        ylabel="test accuracy (%)",
        ylim=(90, 95.6),
        title="ResNet-20, 2 CPU cores: test accuracy after each epoch, one line per seed",
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=ROOT / "docs" / "resnet_epochs.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "resnet_acc_vs_wall.png")
    a = ap.parse_args(argv)
    try:
        runs = read_runs(a.csv)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    draw(runs, a.out)
    print(f"{len(runs)} runs -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
