"""Per-epoch test accuracy of a train.py run made with report.test_each_epoch=true, with the seconds from launch
at which each epoch's test pass was logged, and the first epochs reaching 94% and 95% (reporting only: the run's
checkpoint was chosen on validation).

    python scripts/time_to_accuracy.py outputs/final/resnet_s0 [outputs/final/resnet_short_s0 ...]

Launch time: `<run>/launched_at` (written by scripts/run_resnet_finals.sh), else the first TensorBoard event.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run_dir: Path, tag: str) -> list[tuple[float, float]]:
    """[(wall_time, value)] of one scalar over all TensorBoard event files of the run, in order."""
    out = []
    for f in sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.wall_time, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def summarise(run_dir: Path, targets: tuple[float, ...] = (0.94, 0.95)) -> dict | None:
    test = scalars(run_dir, "test_each_epoch/acc")
    val = scalars(run_dir, "val/acc")
    launched = run_dir / "launched_at"
    if not test and not launched.is_file():
        msg = f"{run_dir}: no test_each_epoch/acc in its tensorboard/ (run with report.test_each_epoch=true)"
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)
    t0 = float(launched.read_text()) if launched.is_file() else min(t for t, _ in test + val)
    print(f"## {run_dir}")
    print("| epoch | s from launch | val acc | test acc |\n|---|---|---|---|")
    for i, (t, acc) in enumerate(test):
        v = f"{val[i][1]:.4f}" if i < len(val) else ""
        print(f"| {i + 1} | {t - t0:.0f} | {v} | {acc:.4f} |")  # epochs from 1, as in checkpoint names
    for target in targets:
        hit = next(((i, t - t0) for i, (t, a) in enumerate(test) if a >= target), None)
        print(
            f"first epoch with test acc >= {target:.0%}: "
            + (f"epoch {hit[0] + 1} at {hit[1]:.0f} s" if hit else "never")
        )
    m = run_dir / "metrics.json"
    d = json.loads(m.read_text()) if m.is_file() else None
    if d:
        print(
            f"final: test_acc {d['test_acc']:.4f} (best val epoch {d['best_epoch']}, val {d['val_acc_best']:.4f}), "
            f"wall {d['wall_seconds']:.0f} s, {d['device']}, {d['precision']}"
        )
    print()
    return d


def mean_std(values: list[float]) -> str:
    """'mean ± std' in percent (sample std, n - 1, as the leaderboard's)."""
    pct = [100 * v for v in values]
    return f"{statistics.fmean(pct):.2f} ± {statistics.stdev(pct):.2f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    finished = [d for d in map(summarise, ap.parse_args().runs) if d]
    if len(finished) > 1:  # the README row: the seeds' mean ± std and the range of wall times
        walls = sorted(d["wall_seconds"] for d in finished)
        print(
            f"{len(finished)} finished runs (seeds {', '.join(str(d['seed']) for d in finished)}): "
            f"test acc {mean_std([d['test_acc'] for d in finished])}, "
            f"val acc {mean_std([d['val_acc_best'] for d in finished])}, wall {walls[0]:.0f}-{walls[-1]:.0f} s"
        )


if __name__ == "__main__":
    main()
