"""Time to accuracy, measured as the speed-run records are: a recipe run n times from the command line, each
`python train.py <recipe> seed=<s>` timed from its launch (imports included) to its exit.

Per run: the final test accuracy (the run's own metrics.json: the checkpoint chosen on validation, tested once),
the wall seconds, and the training FLOPs (the net's forward FLOPs per image, counted by torch's FlopCounterMode,
x 3 for forward + backward, x the training images seen). Then one line over the runs: n, mean ± std and minimum
of test accuracy, mean wall, the CPU and precision. Every run is printed and appended as one JSON line to
--results (default benchmarks/results.jsonl), with the CPU, GPU, threads, versions, date and command.

--versus <overrides>: side by side in one invocation, on the same machine, the seconds to --target of the first
recipe and of this one, and their ratio. Seconds to the target: from launch to the end of the first validation
epoch whose weights (those validation sees: EMA, TTA) reach --target on the 10k test set, tested there by a
callback (reporting only, never selection; its own cost is inside the later times). Each row keeps the whole curve
(test_acc_by_epoch, s_by_epoch), as throughput.py's --tta rows do; where one recipe never reaches --target, the
ratio is given at the best accuracy both reached instead, and says so.

    python benchmarks/speedrun.py experiment=speed94 --runs 5
    python benchmarks/speedrun.py experiment=speed94 --seeds 5 6 7                  (more seeds, same table)
    python benchmarks/speedrun.py experiment=speed95 --runs 5
    python benchmarks/speedrun.py experiment=speed95 --versus experiment=resnet --target 0.95
    python benchmarks/speedrun.py experiment=speed94 --runs 2 trainer=gpu     (CUDA rows)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.throughput import RESULTS, ROOT, SYNTHETIC, print_table, record, timed_train
from fmnist_lit.synthetic import write_tiny_root

# train.py runs from the repository root, where `benchmarks` is importable
TARGET_CALLBACK = "+callbacks.time_to_target._target_=benchmarks.speedrun.TestAtValidation"
TARGET_CALLBACK += " +callbacks.time_to_target.output_dir=${paths.output_dir}"


class TestAtValidation(L.Callback):
    """After every validation epoch, the test accuracy of the weights validation saw (EMA swapped in, the
    module's TTA): appended as {"epoch", "test_acc", "unix_time"} to `<output_dir>/test_at_validation.jsonl`."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "test_at_validation.jsonl"

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm, correct, n = trainer.datamodule, 0, 0
        with trainer.precision_plugin.forward_context():
            for batch in dm.test_dataloader():
                x, y = dm.on_after_batch_transfer([t.to(pl_module.device) for t in batch], 0)
                correct += int((pl_module.eval_logits(x).argmax(1) == y).sum())
                n += len(y)
        row = {"epoch": trainer.current_epoch + 1, "test_acc": correct / n, "unix_time": time.time()}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def train_flops(run_dir: Path) -> float:
    """Training FLOPs of a finished run: 3 x forward FLOPs per image x images trained on."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    net = instantiate(cfg.model.net).eval()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, 28, 28))
    m = json.loads((run_dir / "metrics.json").read_text())
    images = m["epochs_run"] * (60_000 - cfg.data.val_size)
    return 3.0 * counter.get_total_flops() * images


def run(recipe: list[str], seed: int, out: Path, args, target: bool = False) -> dict[str, Any]:
    """One timed `python train.py <recipe> seed=<seed>` into `out`: its results row."""
    overrides = [*recipe, f"seed={seed}", *args.extra, *(TARGET_CALLBACK.split() if target else [])]
    t0, wall, m = timed_train(overrides, out)
    row = {
        "kind": "speedrun",
        "recipe": " ".join([*recipe, *args.extra]),
        "seed": seed,
        "precision": m["precision"],
        "threads": m["threads"],
        "test_acc": round(m["test_acc"], 4),
        "val_acc": round(m["val_acc_best"], 4) if m.get("val_acc_best") is not None else None,
        "epochs": m["epochs_run"],
        "wall_s": round(wall, 1),
        "train_tflops": round(train_flops(out) / 1e12, 2),
        "train_command": "python train.py " + " ".join(overrides),
    }
    if target:
        epochs = [json.loads(line) for line in (out / "test_at_validation.jsonl").read_text().splitlines()]
        # the whole curve, so the seconds to any other accuracy can be read from the same run
        row |= {
            "test_acc_by_epoch": [round(e["test_acc"], 4) for e in epochs],
            "s_by_epoch": [round(e["unix_time"] - t0, 1) for e in epochs],
        }
        row |= {"target": args.target, "s_to_target": seconds_to(row, args.target)}
    return row


def seconds_to(row: dict[str, Any], acc: float) -> float | None:
    """Seconds from launch to the first validation whose test accuracy reached `acc` (None: never)."""
    return next((s for s, a in zip(row["s_by_epoch"], row["test_acc_by_epoch"]) if a >= acc), None)


def versus_line(rows: list[dict[str, Any]], target: float) -> str:
    """The side-by-side verdict: the ratio of seconds to `target`, or, where one recipe never reached it, the
    ratio at the best accuracy both reached (the lower of their best), so the comparison still says something."""
    first, second = (r["recipe"] for r in rows)
    s1, s2 = (r["s_to_target"] for r in rows)
    if s1 is not None and s2 is not None:
        return f"{first} reaches {target:.1%} {s2 / s1:.2f}x sooner than {second}"
    line = f"not both reached {target:.1%}: no ratio"
    common = min(max(r["test_acc_by_epoch"], default=0.0) for r in rows)
    if common > 0:
        s1, s2 = (seconds_to(r, common) for r in rows)
        line += f"; both reached {common:.2%} (the lower of their best): {first} {s2 / s1:.2f}x sooner"
        line += f" ({s1:.0f} s against {s2:.0f} s)"
    return line


def mean_std(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["test_acc"] for r in rows]
    # validation beside test: the split the recipe's values were chosen on, and its gap to test
    val = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    return {
        "recipe": rows[0]["recipe"],
        "n": len(rows),
        "test_acc": mean_std(acc, 4),
        "min": f"{min(acc):.4f}",
        "val_acc": mean_std(val, 4) if val else "-",
        "wall_s": mean_std([r["wall_s"] for r in rows], 0),
        "train_tflops": rows[0]["train_tflops"],
        "precision": rows[0]["precision"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "overrides", nargs="+", help="the recipe, then any train.py override, e.g. experiment=speed94"
    )
    p.add_argument("--runs", type=int, default=5, help="seeds 0..runs-1, one run after the other")
    p.add_argument("--seeds", nargs="+", type=int, help="these seeds instead of 0..runs-1")
    p.add_argument("--versus", nargs="+", help="a second recipe, timed to --target beside the first")
    p.add_argument("--target", type=float, default=0.95, help="test accuracy of --versus")
    p.add_argument("--synthetic", action="store_true", help="tiny fake data, one epoch: a smoke test")
    p.add_argument(
        "--results", type=Path, help="JSON lines appended here (default: benchmarks/results.jsonl)"
    )
    args = p.parse_args(argv)
    args.command = "python benchmarks/speedrun.py " + " ".join(argv if argv is not None else sys.argv[1:])
    # the recipe is the first override; the rest go to every run, --versus's included
    recipe, args.extra = args.overrides[:1], args.overrides[1:]
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.seeds is not None and args.versus:
        p.error("--seeds times one recipe; --versus runs seed 0 of each")
    if args.synthetic and args.results and args.results.resolve().is_relative_to(ROOT):
        p.error("--synthetic measures fake data: send its --results outside the repository")
    if not args.synthetic:
        args.results = args.results or RESULTS
    args.accelerator = (
        "cuda" if any(o in ("trainer=gpu", "trainer.accelerator=gpu") for o in args.extra) else "cpu"
    )

    with tempfile.TemporaryDirectory(prefix="fmnist_speedrun_") as tmp:
        out = Path(tmp)
        if args.synthetic:
            root = write_tiny_root(out / "data")
            args.extra += [
                f"data.root={root}",
                *SYNTHETIC.split(),
                "data.batch_size=32",
                "trainer.max_epochs=1",
            ]
        if args.versus:
            rows = [
                record(run(r, 0, out / f"versus_{i}", args, target=True), args)
                for i, r in enumerate([recipe, args.versus])
            ]
            print_table(rows, "recipe precision test_acc s_to_target wall_s train_tflops")
            print(versus_line(rows, args.target))
            return 0
        seeds = args.seeds if args.seeds is not None else range(args.runs)
        rows = [record(run(recipe, s, out / f"run_{s}", args), args) for s in seeds]
        print_table(rows, "seed precision test_acc val_acc epochs wall_s train_tflops")
        print_table(
            [summary(rows) | {"cpu": rows[0]["cpu"]}],
            "recipe n test_acc min val_acc wall_s train_tflops precision cpu",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
