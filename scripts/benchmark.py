"""Training/inference throughput of the issue-4 paths per model, and time-to-accuracy of whole runs.

Paths (all batch `--batch`, one process, same data):
  a       naive: torchvision per-image PIL -> ToTensor/Normalize through a DataLoader, fp32, NCHW (Lightning)
  b       the fast path (uint8 tensor in memory, per-batch normalise), fp32, NCHW (Lightning)
  c       the fast path with the project default: precision=auto (bf16-mixed where the CPU/GPU does bf16 natively,
          else fp32) + channels_last (Lightning)
  c_bf16  c forced to bf16-mixed (the issue's literal (c); emulated, hence slow, on CPUs without AVX512-BF16/AMX)
  d       c + torch.compile (model.compile=true); compile seconds reported separately
  e       a plain PyTorch loop over c's data, model, precision, optimiser and OneCycle: what Lightning adds
Time-to-accuracy: `train.py` in a subprocess with a callback testing after every epoch; wall seconds from the
subprocess launch (imports included) until test accuracy first reaches 91% / 93%.

python scripts/benchmark.py                        # everything; writes docs/benchmarks.json + tables in BENCHMARKS.md
python scripts/benchmark.py --synthetic            # tiny synthetic data, seconds (the test suite's smoke test)
python scripts/benchmark.py --models bn_gap --paths a c e --repeats 3 --tta   # interleaved a c e a c e a c e:
                                                   # ratios robust to a drifting, shared 2-core machine
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever the venv's editable install points at

import torch
from hydra.utils import instantiate

from fmnist_lit import bench_tables
from fmnist_lit.data import augment, normalize_uint8
from fmnist_lit.speed import (
    StepTimer,
    loadavg,
    machine_info,
    median,
    peak_rss_mb,
    reset_peak_rss,
    window_rates,
)
from fmnist_lit.train import build_callbacks, build_loggers, set_threads
from fmnist_lit.utils import resolve_precision, write_json
from tests.conftest import compose_cfg, make_images, write_idx

PATHS = {  # name: (fast data path, precision, channels_last, compile, loop)
    "a": (False, "32-true", False, False, "lightning"),
    "b": (True, "32-true", False, False, "lightning"),
    "c": (True, "auto", True, False, "lightning"),
    "c_bf16": (True, "bf16-mixed", True, False, "lightning"),
    "d": (True, "auto", True, True, "lightning"),
    "e": (True, "auto", True, False, "plain"),
}


def plain_loop(cfg, dm, n_steps: int, precision: str) -> list[float]:
    """(e): the same net, optimiser, OneCycle, data and precision as Lightning path c, with no framework."""
    lit = instantiate(cfg.model)  # only to build the net exactly as the LightningModule does (channels_last)
    net, crit, hp = lit.net, lit.criterion, dm.hparams
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    sched = instantiate(cfg.scheduler)(optimizer=opt, total_steps=n_steps) if cfg.get("scheduler") else None
    bf16 = precision.startswith("bf16")
    times, it = [], iter(dm.train_dataloader())
    net.train()
    for _ in range(n_steps):
        x, y = next(it)
        x = normalize_uint8(x)
        if hp.augment_pad or hp.augment_flip:
            x = augment(x, hp.augment_pad, hp.augment_flip)
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = crit(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        times.append(time.perf_counter())
    return times


@torch.no_grad()
def inference_rates(net, dm, batch: int, n_windows: int, precision: str) -> list[float]:
    """Images/s of `n_windows` single-batch forward passes on test images (after one warm-up batch), through the
    path's own data pipeline (PIL DataLoader for a, tensor slices otherwise)."""
    net.eval()
    hp, bf16 = dm.hparams, precision.startswith("bf16")
    if hp.fast:
        batches = ((dm.test_x[i * batch:(i + 1) * batch], None) for i in range(n_windows + 1))
    else:
        batches = iter(torch.utils.data.DataLoader(dm.test_dataloader().dataset, batch_size=batch))
    rates = []
    for i in range(n_windows + 1):
        t = time.perf_counter()
        x, _ = next(batches)
        x = normalize_uint8(x) if x.dtype == torch.uint8 else x
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x)
        if i:  # batch 0 is the warm-up
            rates.append(len(x) / (time.perf_counter() - t))
    return rates


def run_path(model: str, path: str, args, out: Path) -> dict:
    import lightning as L

    fast, precision, cl, comp, loop = PATHS[path]
    # bf16 without native kernels is ~10x slower: fewer steps (OneCycle needs >= 6 steps)
    warmup, window, n_win = (1, max(2, args.window // 3), 3) if path == "c_bf16" else (
        args.warmup, args.window, args.windows)
    n_steps = warmup + window * n_win
    cfg = compose_cfg(out / f"{model}_{path}", args.data_root, tiny=False, overrides=[
        f"model={model}", *args.data_overrides, f"data.fast={fast}", f"data.batch_size={args.batch}", f"trainer.precision={precision}",
        f"model.channels_last={cl}", f"model.compile={comp}", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={n_steps}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
        "callbacks.model_checkpoint=null", "callbacks.model_summary=null", "seed=0",
        f"threads={args.threads if args.threads else 'null'}"])
    L.seed_everything(0, verbose=False)
    set_threads(cfg.get("threads"))
    prec = resolve_precision(precision, "cpu")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    load0 = loadavg()
    reset_peak_rss()
    t_start = time.perf_counter()
    if loop == "plain":
        times = plain_loop(cfg, dm, n_steps, prec)
        net = None
    else:
        lit, timer = instantiate(cfg.model), StepTimer()
        trainer = instantiate(cfg.trainer, callbacks=[*build_callbacks(cfg), timer], logger=build_loggers(cfg),
                              precision=prec)
        trainer.fit(lit, datamodule=dm)
        times, net = timer.times, lit.net
    rates = window_rates(times, args.batch, warmup, window)
    step_s = args.batch / median(rates) if rates else None
    row = {
        "model": model, "path": path, "data": "fast" if fast else "torchvision PIL DataLoader", "precision": prec,
        "channels_last": cl, "compile": comp, "loop": loop, "batch": args.batch, "threads": torch.get_num_threads(),
        "steps": f"{warmup} warm-up + {n_win} x {window}", "train_img_s": median(rates),
        "train_img_s_windows": [round(r, 1) for r in rates],
        # the first step holds the compilation (forward and backward graphs): its excess over a normal step
        "compile_s": round(times[0] - t_start - step_s, 1) if comp and step_s else None,
        "peak_rss_mb": peak_rss_mb(), "loadavg_before": load0,
    }
    if loop == "lightning":  # (e) would repeat c's numbers
        # a compiled net would recompile for eval mode; inference is timed on the net it wraps
        net = getattr(net, "_orig_mod", net)
        row["infer_img_s"] = median(inference_rates(net, dm, args.batch, n_win, prec))
    row["loadavg_after"] = loadavg()
    print(json.dumps({k: v for k, v in row.items() if k != "train_img_s_windows"}), flush=True)
    return row


def time_to_accuracy(recipe: str, seed: int, args, out: Path) -> dict:
    """One full `train.py` run in a subprocess; test accuracy after every epoch (never used for selection)."""
    run_dir = out / f"tta_{recipe}_{seed}"
    overrides = ([] if recipe == "default" else [f"experiment={recipe}"]) + [
        f"seed={seed}", f"hydra.run.dir={run_dir}", "+callbacks.tta._target_=fmnist_lit.speed.TimeToAccuracy",
        "+callbacks.tta.output_dir=${paths.output_dir}", *args.data_overrides, *args.tta_overrides]
    if recipe == "default" and args.default_stop_at:
        # the schedule stays the full run's (OneCycle over max_epochs); only the epochs after the target are cut
        overrides.append(f"+callbacks.tta.stop_at={args.default_stop_at}")
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    load0, t0 = loadavg(), time.time()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = json.loads((run_dir / "time_to_accuracy.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())

    def first(th: float) -> float | None:
        return next((round(r["unix_time"] - t0, 1) for r in rows if r["test_acc"] >= th), None)

    res = {"recipe": recipe, "seed": seed, "s_to_91": first(0.91), "s_to_93": first(0.93),
           "epoch_test_acc": [round(r["test_acc"], 4) for r in rows],
           "epoch_end_s": [round(r["unix_time"] - t0, 1) for r in rows],
           # launch -> first training step: interpreter, imports, config, data, trainer set-up
           "startup_s": round(rows[0]["train_start_unix_time"] - t0, 1) if rows[0].get("train_start_unix_time") else None,
           "final_test_acc": round(metrics["test_acc"], 4), "epochs_run": metrics["epochs_run"],
           "stopped_at_target": bool(recipe == "default" and args.default_stop_at
                                     and any(r["test_acc"] >= args.default_stop_at for r in rows)), "best_epoch": metrics["best_epoch"],
           "wall_s": round(wall, 1), "loadavg_before": load0, "loadavg_after": loadavg(),
           "command": "python train.py " + " ".join(o for o in overrides if not o.startswith(("hydra.run.dir", "data.root")))}
    print(json.dumps(res), flush=True)
    return res


def pool_repeats(runs: list[dict]) -> dict:
    """One row from the repeats of one (model, path): medians over the pooled windows of all repeats."""
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    row["train_img_s_windows"] = [w for r in runs for w in r["train_img_s_windows"]]
    row["train_img_s"] = median(row["train_img_s_windows"])
    row["train_img_s_per_repeat"] = [r["train_img_s"] for r in runs]
    row["repeats"] = len(runs)
    infer = [r["infer_img_s"] for r in runs if r.get("infer_img_s")]
    row["infer_img_s"] = median(infer) if infer else None
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    # compile caches persist in the process: only the first repeat compiled cold, and that is the cost a user pays
    row["compile_s"] = runs[0].get("compile_s")
    row["loadavg_after"] = runs[-1]["loadavg_after"]
    return row


def merge(res: dict, section: str, new: list[dict], key: tuple[str, ...]) -> None:
    keep = [r for r in res.get(section, {}).get("rows", []) if tuple(r[k] for k in key) not in
            {tuple(n[k] for k in key) for n in new}]
    res[section] = {"rows": keep + new, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def make_synthetic(root: Path) -> None:
    """600/200 learnable fake images in torchvision's IDX layout (class k = a bright square at place k)."""
    raw = root / "FashionMNIST" / "raw"
    write_idx(raw, "train", *make_images(600, 0))
    write_idx(raw, "t10k", *make_images(200, 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "simple_cnn", "bn_gap", "fast_cnn"])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--window", type=int, default=6, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    p.add_argument("--repeats", type=int, default=1, help="measure every (model, path) this often, interleaved")
    p.add_argument("--threads", type=int, default=None, help="torch threads; default all cores")
    p.add_argument("--tta", nargs="*", default=["fast", "default"], help="recipes for time-to-accuracy ('' = none)")
    p.add_argument("--tta-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--default-seeds", nargs="+", type=int, default=[0], help="seeds for the (slow) default recipe")
    p.add_argument("--default-stop-at", type=float, default=0.93,
                   help="stop the default recipe once test acc reaches this (0 = run all epochs)")
    p.add_argument("--tta-overrides", nargs="*", default=[], help="extra train.py overrides for those runs")
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--synthetic", action="store_true", help="tiny fake data, few steps: a smoke test")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks.json")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "BENCHMARKS.md", help="tables are rewritten in it")
    args = p.parse_args(argv)
    args.tta = [r for r in args.tta if r]
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1 (got {args.repeats})")
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="fmnist_bench_") as tmp:
        out = Path(tmp)
        args.data_overrides = []
        if args.synthetic:
            make_synthetic(out / "data")
            args.data_root = out / "data"
            args.data_overrides = ["logger=csv", "data.check_md5=false", "data.download=false",
                                   "data.val_size=100", "data.eval_batch_size=100"]
            # one thread: a smoke test must not depend on idle cores (2 OpenMP threads on a busy box spin-wait)
            args.tta_overrides = [*args.tta_overrides, "trainer.max_epochs=1", "logger=csv",
                                  "callbacks.progress_bar=null", "threads=1"]
            args.batch, args.warmup, args.window, args.windows, args.threads = 32, 1, 2, 2, 1
        else:
            args.data_root, args.data_overrides = ROOT / "data", []
        res = json.loads(args.json.read_text()) if args.json.exists() and not args.synthetic else {}
        res["machine"] = machine_info()
        # new rows replace the JSON's rows of the same (model, path) / (recipe, seed), so parts can be re-run
        if not args.no_throughput:
            # --repeats R: every (model, path) R times, interleaved (a b c .. a b c ..), so slow drift of a shared
            # or throttled machine hits every path alike; the windows of all repeats are pooled into one median
            runs = [run_path(m, path, args, out) for _ in range(args.repeats) for m in args.models
                    for path in args.paths]
            rows = [{**pool_repeats([r for r in runs if (r["model"], r["path"]) == key]), "command": command}
                    for key in dict.fromkeys((r["model"], r["path"]) for r in runs)]
            merge(res, "throughput", rows, ("model", "path"))
        for recipe in args.tta:
            runs = [{**time_to_accuracy(recipe, s, args, out), "benchmark_command": command}
                    for s in (args.default_seeds if recipe == "default" else args.tta_seeds)]
            merge(res, "time_to_accuracy", runs, ("recipe", "seed"))
            write_json(args.json, res)  # a long default-recipe run should not lose the fast ones
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, res)
    if args.md is not None:
        bench_tables.update_markdown(args.md, res)
    print(bench_tables.tables(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
