"""Per-epoch test accuracy of a train.py run, with the seconds from launch at which each epoch ended, and the first
epochs reaching 94% and 95% (reporting only: the run's checkpoint was chosen on validation).

    python scripts/time_to_accuracy.py outputs/final/resnet_s0 [outputs/final/resnet_short_s0 ...]

Per-epoch test accuracy, from either
- a run with callbacks=every_epoch (scripts/run_resnet_finals.sh): each `checkpoints/every_epoch/epochNNN.ckpt` is
  tested here as eval.py tests (the run's precision and TTA), after the timed run; the epoch's time is the file's
  modification time. The results are kept in `<run>/test_each_epoch.json` and read from there next time.
- or a run with report.test_each_epoch=true: the `test_each_epoch/acc` it logged to TensorBoard.
Launch time: `<run>/launched_at` (written by scripts/run_resnet_finals.sh), else the first TensorBoard event.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist_lit.checkpoint import cpu_trainer, load_model, read_checkpoint, run_config
from fmnist_lit.utils import UserError


def scalars(run_dir: Path, tag: str) -> list[tuple[float, float]]:
    """[(wall_time, value)] of one scalar over all TensorBoard event files of the run, in order."""
    out = []
    for f in sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.wall_time, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def read_cache(cache: Path) -> list[dict]:
    """The rows of an earlier `test_each_epoch.json`; [] (everything is tested again) if there is none, or one this
    script cannot read (edited by hand, cut short by a full disk): a warning says so."""
    if not cache.is_file():
        return []
    try:
        rows = json.loads(cache.read_text())
        if isinstance(rows, list) and all(
            isinstance(r, dict)
            and isinstance(r.get("file"), str)
            and all(isinstance(r.get(k), (int, float)) for k in ("mtime", "test_acc"))
            for r in rows
        ):
            return rows
        why = "not a list of {file: name, mtime: number, test_acc: number} rows"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        why = str(e)
    print(f"warning: {cache} is unreadable ({why}): testing every checkpoint again", file=sys.stderr)
    return []


def checkpoint_test_acc(run_dir: Path) -> list[tuple[float, float]]:
    """[(mtime, test acc)] of the run's checkpoints/every_epoch/epochNNN.ckpt, in epoch order; [] if it has none."""
    ckpts = sorted((run_dir / "checkpoints" / "every_epoch").glob("epoch*.ckpt"))
    cache = run_dir / "test_each_epoch.json"
    mtimes = {c.name: c.stat().st_mtime for c in ckpts}
    # a rewritten checkpoint (its mtime changed) is tested again
    done = {r["file"]: r for r in read_cache(cache) if mtimes.get(r["file"]) == r["mtime"]}
    if ckpts and any(c.name not in done for c in ckpts):
        _, cfg = run_config(ckpts[0])
        dm = instantiate(cfg.data)
        trainer = cpu_trainer(cfg)
        for c in ckpts:
            if c.name not in done:
                model = load_model(cfg, read_checkpoint(c), c)
                # what the same test pass costs inside a run (report.test_each_epoch)
                t = time.perf_counter()
                acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
                t = time.perf_counter() - t
                done[c.name] = {"file": c.name, "mtime": mtimes[c.name], "test_acc": acc, "test_s": t}
                print(f"{c}: test acc {acc:.4f} in {t:.1f} s", file=sys.stderr)
                # after each test (an interrupted script loses one), whole (written aside, then renamed over)
                tmp = cache.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(sorted(done.values(), key=lambda r: r["file"]), indent=1) + "\n")
                tmp.replace(cache)
    return [(done[c.name]["mtime"], done[c.name]["test_acc"]) for c in ckpts]


def summarise(run_dir: Path, targets: tuple[float, ...] = (0.94, 0.95)) -> dict | None:
    test = checkpoint_test_acc(run_dir) or scalars(run_dir, "test_each_epoch/acc")
    val = scalars(run_dir, "val/acc")
    launched = run_dir / "launched_at"
    if not test and not launched.is_file():
        msg = (
            f"{run_dir}: no checkpoints/every_epoch/ and no test_each_epoch/acc in its tensorboard/ "
            "(train with callbacks=every_epoch or report.test_each_epoch=true)"
        )
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)
    t0 = float(launched.read_text()) if launched.is_file() else min(t for t, _ in test + val)
    print(f"## {run_dir}")
    print("| epoch | s from launch | val acc | test acc |\n|---|---|---|---|")
    for i, (t, acc) in enumerate(test):
        v = f"{val[i][1]:.4f}" if i < len(val) else ""
        # epochs from 1, as in checkpoint names
        print(f"| {i + 1} | {t - t0:.0f} | {v} | {acc:.4f} |")
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
    try:
        finished = [d for d in map(summarise, ap.parse_args().runs) if d]
    except UserError as e:
        # e.g. the run's data root is not found from here: run from the repository root
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if len(finished) > 1:
        # the README row: the seeds' mean ± std and the range of wall times
        walls = sorted(d["wall_seconds"] for d in finished)
        print(
            f"{len(finished)} finished runs (seeds {', '.join(str(d['seed']) for d in finished)}): "
            f"test acc {mean_std([d['test_acc'] for d in finished])}, "
            f"val acc {mean_std([d['val_acc_best'] for d in finished])}, wall {walls[0]:.0f}-{walls[-1]:.0f} s"
        )


if __name__ == "__main__":
    main()
