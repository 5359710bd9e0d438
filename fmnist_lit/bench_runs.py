"""The benchmark's whole-run measurements (`scripts/benchmark.py`): `train.py` in a subprocess of this checkout,
exactly as a user runs it, read back through the run's own files.

- time to accuracy: a recipe with the `fmnist_lit.speed.TimeToAccuracy` callback, which tests after every epoch;
- precision comparison: one recipe and seed at `trainer.precision=32-true` and at `bf16-mixed`, all else equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

from fmnist_lit.bench_tables import PRECISIONS
from fmnist_lit.speed import loadavg
from fmnist_lit.utils import UserError, native_bf16

ROOT = Path(__file__).resolve().parent.parent


def device_overrides(accelerator: str) -> list[str]:
    """train.py overrides that put a run on `accelerator` ("cpu" or "cuda")."""
    if accelerator == "cuda":
        # the uint8 splits go to the GPU once (the default of data.keep_on_device, spelled out for the record)
        return ["trainer.accelerator=gpu", "data.keep_on_device=true"]
    # trainer.accelerator=auto is the CPU where torch sees no GPU: pinned only where it would not be, so that the
    # commands recorded on a CPU-only machine stay the ones a user types
    return ["trainer.accelerator=cpu"] if torch.cuda.is_available() else []


def train_run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """`python train.py <overrides>` in a subprocess, writing into `run_dir`.

    Returns the run's metrics.json (`metrics`) with what only the launcher sees: `t0` (unix time of the launch, so
    the run's own timestamps can count from before its imports), `wall_s`, the 1-min load average before and after,
    and the `command` as a user would type it (without this benchmark's run folder and data root).
    """
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    load0, t0 = loadavg(), time.time()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"metrics": json.loads((run_dir / "metrics.json").read_text()), "t0": t0, "wall_s": round(wall, 1),
            "loadavg_before": load0, "loadavg_after": loadavg(),
            "command": "python train.py " + " ".join(o for o in overrides if not o.startswith("data.root"))}


def time_to_accuracy(recipe: str, seed: int, args: Namespace, out: Path) -> dict[str, Any]:
    """One full `train.py` run; test accuracy after every epoch (never used for selection)."""
    run_dir = out / f"tta_{recipe}_{seed}"
    overrides = ([] if recipe == "default" else [f"experiment={recipe}"]) + [
        f"seed={seed}", "+callbacks.tta._target_=fmnist_lit.speed.TimeToAccuracy",
        "+callbacks.tta.output_dir=${paths.output_dir}", *device_overrides(args.accelerator), *args.data_overrides,
        *args.tta_overrides, *args.smoke_overrides]
    if recipe == "default" and args.default_stop_at:
        # the schedule stays the full run's (OneCycle over max_epochs); only the epochs after the target are cut
        overrides.append(f"+callbacks.tta.stop_at={args.default_stop_at}")
    run = train_run(overrides, run_dir)
    rows = json.loads((run_dir / "time_to_accuracy.json").read_text())
    metrics, t0 = run["metrics"], run["t0"]

    def first(th: float) -> float | None:
        return next((round(r["unix_time"] - t0, 1) for r in rows if r["test_acc"] >= th), None)

    res = {"recipe": recipe, "seed": seed, "device": args.device, "s_to_91": first(0.91), "s_to_93": first(0.93),
           "epoch_test_acc": [round(r["test_acc"], 4) for r in rows],
           "epoch_end_s": [round(r["unix_time"] - t0, 1) for r in rows],
           # launch -> first training step: interpreter, imports, config, data, trainer set-up
           "startup_s": round(rows[0]["train_start_unix_time"] - t0, 1) if rows[0].get("train_start_unix_time") else None,
           "final_test_acc": round(metrics["test_acc"], 4), "epochs_run": metrics["epochs_run"],
           "stopped_at_target": bool(recipe == "default" and args.default_stop_at
                                     and any(r["test_acc"] >= args.default_stop_at for r in rows)),
           "best_epoch": metrics["best_epoch"], "wall_s": run["wall_s"], "loadavg_before": run["loadavg_before"],
           "loadavg_after": run["loadavg_after"], "command": run["command"]}
    print(json.dumps(res), flush=True)
    return res


def check_bf16(accelerator: str, allow_emulated: bool) -> None:
    """Refuse a real-data precision comparison where bf16 is emulated: it would take hours, and its bf16 timings
    would describe an emulation nobody trains with."""
    if allow_emulated or native_bf16(accelerator):
        return
    where = ("this CPU has neither AMX nor AVX512-BF16" if accelerator == "cpu"
             else f"this GPU ({torch.cuda.get_device_name(0)}) has no native bf16 (it predates Ampere)")
    gpu_here = accelerator == "cpu" and torch.cuda.is_available()
    hint = " torch sees a CUDA GPU here: add --accelerator cuda." if gpu_here else ""
    raise UserError(
        f"--precision-compare: {where}, so bf16-mixed would be emulated, several times slower than fp32 "
        "(docs/BENCHMARKS.md), and full training runs would take hours. Run it on a CPU with AMX or AVX512-BF16 "
        "(e.g. Intel Xeon 4th generation or later) or on an Ampere-or-later GPU with --accelerator cuda; "
        "--allow-emulated-bf16 runs it here anyway, --synthetic runs a seconds-long smoke test." + hint)


def precision_compare(seed: int, args: Namespace, out: Path) -> list[dict[str, Any]]:
    """The recipe (`args.precision_overrides`; none = `python train.py`) at each of PRECISIONS, same seed and all
    else equal: one row per precision, with the test accuracy of the checkpoint chosen on validation."""
    recipe, rows = " ".join(args.precision_overrides) or "default", []
    for precision in PRECISIONS:
        run = train_run([*args.precision_overrides, f"seed={seed}", f"trainer.precision={precision}",
                         *device_overrides(args.accelerator), *args.data_overrides, *args.smoke_overrides],
                        out / f"precision_{seed}_{precision}")
        m = run["metrics"]
        rows.append({
            "recipe": recipe, "seed": seed, "precision": precision, "device": args.device,
            "device_detail": m["device"], "bf16_native": native_bf16(args.accelerator),
            "test_acc": round(m["test_acc"], 4),
            "val_acc_best": round(m["val_acc_best"], 4) if m["val_acc_best"] is not None else None,
            "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"], "wall_s": run["wall_s"],
            "loadavg_before": run["loadavg_before"], "loadavg_after": run["loadavg_after"],
            "command": run["command"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows
