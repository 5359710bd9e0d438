"""Training throughput per model and path, and time to 91% test accuracy of `experiment=fast`.

Paths (batch --batch, one process, the same data; docs/BENCHMARKS.md):
  a  torchvision per-image PIL -> ToTensor -> Normalize through a DataLoader, fp32, NCHW (Lightning)
  b  the in-memory path (uint8 tensors in memory, per-batch normalisation), fp32, NCHW (Lightning)
  c  b at --precision (default auto) + channels_last (Lightning)
  d  c + torch.compile (model.compile=true); the compilation's seconds are reported apart
  e  a plain PyTorch loop over c's data, net, precision, optimiser and schedule: c / e is what Lightning costs
--tta: `python train.py experiment=fast` per seed in a subprocess, testing after every epoch; seconds from the
launch (imports included) until test accuracy first reaches --target.

Each measurement is printed and appended as one JSON line to --results, with the CPU, threads, torch, date and
command. --synthetic (tiny fake data, a few steps) is a smoke test: it writes only where --results says.

python benchmarks/throughput.py --models fast_cnn bn_gap --paths a b c e --threads 2
python benchmarks/throughput.py --paths c e --precision 32-true bf16-mixed
python benchmarks/throughput.py --models speed_net --paths c --batch 512 --overrides 'model.net.widths=[32,64,64]'
python benchmarks/throughput.py --tta --seeds 0 1 2
python benchmarks/throughput.py --accelerator cuda --paths a b c d e
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import open_dict

from fmnist_lit.batches import augment, normalize_uint8
from fmnist_lit.hardware import cpu_name, resolve_precision
from fmnist_lit.synthetic import write_tiny_root

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.jsonl"
# path: (data.in_memory, channels_last, compile, plain loop); a and b run in fp32, c d e at --precision
PATHS = {"a": (0, 0, 0, 0), "b": (1, 0, 0, 0), "c": (1, 1, 0, 0), "d": (1, 1, 1, 0), "e": (1, 1, 0, 1)}
# a throughput run: one epoch cut to the timed steps, no validation, no checkpoints
SHORT_FIT = "trainer.max_epochs=1 trainer.limit_val_batches=0 trainer.num_sanity_val_steps=0 "
SHORT_FIT += "callbacks.model_checkpoint=null callbacks.model_summary=null"
SYNTHETIC = "data.check_md5=false data.download=false data.val_size=100 data.eval_batch_size=100"
# train.py runs from the repository root, where `benchmarks` is importable
TTA = "+callbacks.tta._target_=benchmarks.throughput.TimeToAccuracy +callbacks.tta.output_dir=${paths.output_dir}"


def sync(device: torch.device) -> None:
    """CUDA kernels run asynchronously: wait for them, so that a timer read next times finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """perf_counter (s) after every optimiser step. The time between two holds all that a step costs: fetching
    and transforming the batch, forward, backward, optimiser, schedule, logging and the progress bar."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(pl_module.device)
        self.times.append(time.perf_counter())


class TimeToAccuracy(L.Callback):
    """Appends `{"epoch", "test_acc", "unix_time"}` to `<output_dir>/time_to_accuracy.jsonl` when training starts
    (epoch 0, no accuracy) and after every training epoch (after its validation): the test accuracy of the
    current weights. Never used for selection; its own cost is inside every later time."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "time_to_accuracy.jsonl"

    def _write(self, epoch: int, acc: float | None) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": epoch, "test_acc": acc, "unix_time": time.time()}) + "\n")

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(0, None)

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dm, correct, n = trainer.datamodule, 0, 0
        pl_module.eval()
        # the autocast that training uses
        with trainer.precision_plugin.forward_context():
            for x, y in dm.test_dataloader():
                x, y = x.to(pl_module.device), y.to(pl_module.device)
                # in-memory path: uint8 (B, 28, 28)
                x = x if x.is_floating_point() else normalize_uint8(x)
                if dm.hparams.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                correct, n = correct + int((pl_module(x).argmax(1) == y).sum()), n + len(y)
        pl_module.train()
        self._write(trainer.current_epoch + 1, correct / n)


def window_rates(times: list[float], batch: int, warmup: int, window: int) -> list[float]:
    """Images/s of each full window of `window` steps after the first `warmup` (>= 1) steps; `times[i]` is read
    right after step i, so the first window runs from `times[warmup - 1]` to `times[warmup - 1 + window]`."""
    starts = range(warmup - 1, len(times) - window, window)
    return [window * batch / (times[s + window] - times[s]) for s in starts]


def plain_loop(cfg, dm, n_steps: int, precision: str, device: torch.device) -> list[float]:
    """(e): c's net, loss, optimiser, schedule, data and precision with no framework; perf_counter per step."""
    # builds the net exactly as the LightningModule does (channels_last)
    lit = instantiate(cfg.model)
    net, crit, hp = lit.net.to(device).train(), lit.criterion, dm.hparams
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    sched = instantiate(cfg.scheduler)(optimizer=opt, total_steps=n_steps) if cfg.get("scheduler") else None
    # Lightning's autocast
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    # as data.keep_on_device
    dm.train_x, dm.train_y = dm.train_x.to(device), dm.train_y.to(device)
    batches, times = iter(dm.train_dataloader()), []
    for _ in range(n_steps):
        x, y = next(batches)
        x = normalize_uint8(x)
        if hp.augment_pad or hp.augment_flip:
            x = augment(x, hp.augment_pad, hp.augment_flip)
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = crit(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if sched is not None:
            sched.step()
        sync(device)
        times.append(time.perf_counter())
    return times


def compose_train(overrides: list[str]):
    """train.py's config with these overrides, as a run resolves it (without the run's folder)."""
    # a net of one's own (README: conf/model/<name>.yaml naming `mynets.Tiny`) imports from the repository root,
    # as in `python train.py`; a script started from benchmarks/ lacks it on its path
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    # the config reads ${hydra:runtime.choices...}, as in a train.py run
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def compose_or_usage(parser: argparse.ArgumentParser, overrides: list[str]):
    """compose_train, with an unknown model or a bad override as one usage line and exit 2 (Hydra's own message,
    without its traceback)."""
    try:
        return compose_train(overrides)
    except HydraException as e:
        parser.error(str(e).splitlines()[0])


def throughput(model: str, path: str, precision: str, args, out: Path) -> dict[str, Any]:
    """Training images/s of one model on one path: the median of --windows windows after --warmup steps."""
    in_memory, channels_last, comp, plain = (bool(v) for v in PATHS[path])
    n_steps = args.warmup + args.window * args.windows
    overrides = [
        f"paths.output_dir={out}",
        f"model={model}",
        f"data.in_memory={in_memory}",
        *SHORT_FIT.split(),
    ]
    overrides += [
        f"model.channels_last={channels_last}",
        f"model.compile={comp}",
        f"data.batch_size={args.batch}",
    ]
    overrides += [f"trainer.limit_train_batches={n_steps}", *args.device_overrides, *args.data_overrides]
    cfg = compose_train([*overrides, *args.overrides])
    prec = resolve_precision(precision, cfg.trainer.accelerator)
    L.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    t0 = time.perf_counter()
    if plain:
        times = plain_loop(cfg, dm, n_steps, prec, torch.device(args.accelerator))
    else:
        # the project's callbacks and loggers, as a user's run has them (checkpointing off)
        timer = StepTimer()
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks, timer], logger=loggers, precision=prec)
        trainer.fit(instantiate(cfg.model), datamodule=dm)
        times = timer.times
    rates = window_rates(times, args.batch, args.warmup, args.window)
    img_s = statistics.median(rates)
    # the first step holds the compilation: its excess over a timed step
    compile_s = round(times[0] - t0 - args.batch / img_s, 1) if comp else None
    return {
        "kind": "throughput",
        "model": model,
        "path": path,
        "precision": prec,
        "batch": args.batch,
        "overrides": " ".join(args.overrides),
        "img_s": round(img_s, 1),
        "windows_img_s": [round(r, 1) for r in rates],
        "compile_s": compile_s,
    }


def timed_train(overrides: list[str], out: Path) -> tuple[float, float, dict[str, Any]]:
    """`python train.py <overrides>` into `out`, in a subprocess: (launch unix time, wall seconds to its exit, its
    metrics.json). A failed run ends the benchmark with its stderr."""
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={out}"]
    t0 = time.time()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return t0, wall, json.loads((out / "metrics.json").read_text())


def time_to_accuracy(seed: int, args, out: Path) -> dict[str, Any]:
    """One `python train.py experiment=fast seed=<seed>` in a subprocess, with TimeToAccuracy."""
    overrides = ["experiment=fast", f"seed={seed}", *TTA.split(), *args.train_overrides]
    t0, wall, m = timed_train(overrides, out)
    start, *epochs = (json.loads(line) for line in (out / "time_to_accuracy.jsonl").read_text().splitlines())
    reached = next((e["unix_time"] - t0 for e in epochs if e["test_acc"] >= args.target), None)
    return {
        "kind": "tta",
        "recipe": "experiment=fast",
        "seed": seed,
        "precision": m["precision"],
        "threads": m["threads"],
        "target": args.target,
        "s_to_target": None if reached is None else round(reached, 1),
        "s_to_first_step": round(start["unix_time"] - t0, 1),
        "test_acc_by_epoch": [round(e["test_acc"], 4) for e in epochs],
        "s_by_epoch": [round(e["unix_time"] - t0, 1) for e in epochs],
        "final_test_acc": round(m["test_acc"], 4),
        "wall_s": round(wall, 1),
        "train_command": "python train.py " + " ".join(overrides),
    }


def record(row: dict[str, Any], args) -> dict[str, Any]:
    """The row with the machine and the 1-min load average at its end (the benchmark's own threads included;
    the row's own threads win: train.py's), printed and appended to --results."""
    gpu = torch.cuda.get_device_name(0) if args.accelerator == "cuda" else None
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row = {
        "cpu": cpu_name(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "synthetic": args.synthetic,
        "load_1min": round(os.getloadavg()[0], 2),
        "date": date,
        "command": args.command,
    } | row
    print(json.dumps(row), flush=True)
    if args.results is not None:
        # after every measurement: a long run keeps what it measured
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (model, path, precision) over all its windows (repeats pooled): the fastest window (as
    timeit reports the fastest run: other processes on the machine only ever slow a window down) and the
    median; the fastest's ratio to path a of the same model and to path e of the same model and precision."""
    windows: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        windows.setdefault((r["model"], r["path"], r["precision"]), []).extend(r["windows_img_s"])
    best = {k: max(w) for k, w in windows.items()}
    lines = []
    for (model, path, prec), w in windows.items():
        v, a, e = best[model, path, prec], best.get((model, "a", "32-true")), best.get((model, "e", prec))
        lines.append(
            {
                "model": model,
                "path": path,
                "precision": prec,
                "img/s": round(v),
                "median": round(statistics.median(w)),
                "vs_a": f"{v / a:.2f}x" if a else "-",
                "vs_e": f"{v / e:.2f}x" if e else "-",
                "windows": len(w),
            }
        )
    return lines


def print_table(rows: list[dict[str, Any]], cols: str) -> None:
    cols = cols.split()
    cells = [cols, *([str(r.get(c, "-")) for c in cols] for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    for line in cells:
        print("  ".join(s.ljust(w) for s, w in zip(line, widths)))


SYNTHETIC_INTO_REPO = "--synthetic measures fake data: send its --results outside docs/ and benchmarks/"


def synthetic_into_repo(args, root: Path) -> bool:
    """True for --synthetic rows aimed at `root`'s docs/ or benchmarks/ (this script's and keras_baseline.py's
    refusal: fake data never joins the measured results)."""
    dirs = [root / "docs", root / "benchmarks"]
    return bool(args.synthetic and args.results) and any(
        args.results.resolve().is_relative_to(d) for d in dirs
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "simple_cnn", "bn_gap", "fast_cnn"])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--precision", nargs="+", default=["auto"], help="of paths c d e, each in turn")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    p.add_argument("--window", type=int, default=6, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows per measurement")
    p.add_argument("--repeats", type=int, default=1, help="measure all this often, interleaved (a b a b)")
    p.add_argument("--threads", type=int, help="torch threads, here and in train.py (default: every core)")
    p.add_argument("--tta", action="store_true", help="time to --target test accuracy of experiment=fast")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="of --tta")
    p.add_argument("--target", type=float, default=0.91)
    p.add_argument("--train-overrides", nargs="*", default=[], help="added to every train.py run")
    p.add_argument(
        "--overrides", nargs="*", default=[], help="added to every throughput measurement's config"
    )
    p.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--synthetic", action="store_true", help="tiny fake data, a few steps: a smoke test")
    p.add_argument(
        "--results",
        type=Path,
        help="JSON lines appended here (default: benchmarks/results.jsonl; "
        "with --synthetic: none, and never docs/ or benchmarks/)",
    )
    args = p.parse_args(argv)
    args.command = "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        p.error(f"--accelerator cuda: torch {torch.__version__} sees no CUDA GPU here")
    if min(args.warmup, args.window, args.windows, args.repeats) < 1:
        p.error("--warmup, --window, --windows and --repeats must be >= 1")
    if synthetic_into_repo(args, ROOT):
        p.error(SYNTHETIC_INTO_REPO)
    if not args.synthetic:
        args.results = args.results or RESULTS
    if not args.tta:
        # every --models name and --overrides checked before the first measurement (0.2 s per model)
        for m in args.models:
            compose_or_usage(p, [f"model={m}", *args.overrides])
    args.device_overrides = [f"trainer.accelerator={'gpu' if args.accelerator == 'cuda' else 'cpu'}"]
    args.train_overrides = [*args.device_overrides, *args.train_overrides]
    if args.threads:
        torch.set_num_threads(args.threads)
        args.train_overrides.append(f"threads={args.threads}")

    with tempfile.TemporaryDirectory(prefix="fmnist_bench_") as tmp:
        out = Path(tmp)
        args.data_overrides = [f"data.root={ROOT / 'data'}"]
        if args.synthetic:
            # batch 32: 15 steps an epoch on the 500 training images
            args.data_overrides = [f"data.root={write_tiny_root(out / 'data')}", *SYNTHETIC.split()]
            args.batch, args.warmup, args.window, args.windows = 32, 1, 2, 2
            args.train_overrides += [*args.data_overrides, "data.batch_size=32", "trainer.max_epochs=1"]
            args.train_overrides += ["logger=csv", "report.enabled=false", "callbacks.progress_bar=null"]
        if args.tta:
            rows = [record(time_to_accuracy(s, args, out / f"tta_{s}"), args) for s in args.seeds]
            cols = "seed precision threads s_to_first_step s_to_target test_acc_by_epoch s_by_epoch final_test_acc"
            print_table(rows, cols + " wall_s")
            hit = [r["s_to_target"] for r in rows if r["s_to_target"] is not None]
            std = statistics.stdev(hit) if len(hit) > 1 else 0.0
            print(
                f"{len(hit)}/{len(rows)} seeds reached {args.target:.0%}"
                + (f", in {statistics.mean(hit):.1f} ± {std:.1f} s" if hit else "")
            )
        else:
            jobs = [
                (m, pa, prec)
                for m in args.models
                for pa in args.paths
                for prec in (["32-true"] if pa in "ab" else args.precision)
            ]
            rows = [
                record(throughput(*job, args, out / f"{i}_{'_'.join(job)}"), args)
                for i in range(args.repeats)
                for job in jobs
            ]
            print_table(summary(rows), "model path precision img/s median vs_a vs_e windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
