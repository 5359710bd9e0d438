"""Training/inference throughput of the issue-4 paths per model, time-to-accuracy of whole runs, and bf16-mixed vs
fp32 test accuracy of a whole recipe.

Paths (all batch `--batch`, one process, same data):
  a       naive: torchvision per-image PIL -> ToTensor/Normalize through a DataLoader, fp32, NCHW (Lightning)
  b       the fast path (uint8 tensor in memory, per-batch normalise), fp32, NCHW (Lightning)
  c       the fast path with the project default: precision=auto (bf16-mixed where the CPU/GPU does bf16 natively,
          else fp16-mixed on a GPU, fp32 on a CPU) + channels_last (Lightning)
  c_bf16  c forced to bf16-mixed (the issue's literal (c); emulated, hence slow, on CPUs without AVX512-BF16/AMX)
  d       c + torch.compile (model.compile=true); compile seconds reported separately
  e       a plain PyTorch loop over c's data, model, precision, optimiser and OneCycle: what Lightning adds
Time-to-accuracy: `train.py` in a subprocess with a callback testing after every epoch; wall seconds from the
subprocess launch (imports included) until test accuracy first reaches 91% / 93%.
Precision comparison (--precision-compare): `train.py` at 32-true and at bf16-mixed, same seed, all else equal;
test accuracy of the val-selected checkpoint. Refused where bf16 would be emulated (hours; --allow-emulated-bf16).
--accelerator cuda runs all of it on the GPU; its rows sit beside the CPU's (every row has a device).

python scripts/benchmark.py                        # everything on the CPU; writes docs/benchmarks.json + tables in
                                                   # docs/BENCHMARKS.md (rows of the same key and device replaced)
python scripts/benchmark.py --synthetic            # tiny synthetic data, seconds; writes only where --json/--md say
python scripts/benchmark.py --models bn_gap --paths a c e --repeats 3 --tta   # interleaved a c e a c e a c e:
                                                   # ratios robust to a drifting, shared 2-core machine
python scripts/benchmark.py --accelerator cuda     # the GPU rows (throughput and time to accuracy)
python scripts/benchmark.py --no-throughput --tta --search [CANDIDATE ...] [--search-seeds 0 1 2]   # the fast
                                                   # recipe's search (scripts/fast_search.py), validation only
python scripts/benchmark.py --no-throughput --tta --precision-compare [--accelerator cuda]   # bf16 vs fp32 after
                                                   # the default recipe (bn_gap, 10 epochs); AMX/AVX512-BF16 or GPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever the venv's editable install points at

import torch
from hydra.utils import instantiate

from fmnist_lit import bench_tables
from fmnist_lit.bench_runs import check_bf16, precision_compare, time_to_accuracy
from fmnist_lit.data import FashionMNISTDataModule, augment, normalize_uint8
from fmnist_lit.speed import (
    StepTimer,
    loadavg,
    machine_info,
    median,
    peak_gpu_mb,
    peak_rss_mb,
    reset_peak_gpu,
    reset_peak_rss,
    synchronize,
    window_rates,
)
from fmnist_lit.train import build_callbacks, build_loggers, set_threads
from fmnist_lit.utils import UserError, cpu_name, native_bf16, resolve_precision, write_json
from tests.conftest import compose_cfg, make_images, write_idx

PATHS = {  # name: (fast data path, precision, channels_last, compile, loop)
    "a": (False, "32-true", False, False, "lightning"),
    "b": (True, "32-true", False, False, "lightning"),
    "c": (True, "auto", True, False, "lightning"),
    "c_bf16": (True, "bf16-mixed", True, False, "lightning"),
    "d": (True, "auto", True, True, "lightning"),
    "e": (True, "auto", True, False, "plain"),
}


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """What Lightning's precision plugin does around a forward pass: autocast for *-mixed, nothing for 32-true."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def plain_loop(cfg, dm, n_steps: int, precision: str, device: torch.device) -> list[float]:
    """(e): the same net, optimiser, OneCycle, data and precision as Lightning path c, with no framework."""
    lit = instantiate(cfg.model)  # only to build the net exactly as the LightningModule does (channels_last)
    net, crit, hp = lit.net.to(device), lit.criterion, dm.hparams
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    sched = instantiate(cfg.scheduler)(optimizer=opt, total_steps=n_steps) if cfg.get("scheduler") else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")  # as Lightning's 16-mixed
    # as data.keep_on_device does for c: the uint8 split on the device once, batches are slices there
    dm.train_x, dm.train_y = dm.train_x.to(device), dm.train_y.to(device)
    times, it = [], iter(dm.train_dataloader())
    net.train()
    for _ in range(n_steps):
        x, y = next(it)
        x = normalize_uint8(x)
        if hp.augment_pad or hp.augment_flip:
            x = augment(x, hp.augment_pad, hp.augment_flip)
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = crit(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if sched is not None:
            sched.step()
        synchronize(device)  # a GPU queues kernels: time finished steps
        times.append(time.perf_counter())
    return times


@torch.no_grad()
def inference_rates(net, dm, batch: int, n_windows: int, precision: str, device: torch.device) -> list[float]:
    """Images/s of `n_windows` single-batch forward passes on test images (after one warm-up batch), through the
    path's own data pipeline (PIL DataLoader for a, tensor slices otherwise, of the split kept on the device)."""
    net.eval().to(device)  # Lightning moves the module back to the CPU after fit
    hp = dm.hparams
    if hp.fast:
        test_x = dm.test_x.to(device)
        batches = ((test_x[i * batch:(i + 1) * batch], None) for i in range(n_windows + 1))
    else:
        batches = iter(torch.utils.data.DataLoader(dm.test_dataloader().dataset, batch_size=batch))
    rates = []
    for i in range(n_windows + 1):
        t = time.perf_counter()
        x, _ = next(batches)
        x = x.to(device)
        x = normalize_uint8(x) if x.dtype == torch.uint8 else x
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            net(x)
        synchronize(device)
        if i:  # batch 0 is the warm-up
            rates.append(len(x) / (time.perf_counter() - t))
    return rates


def run_path(model: str, path: str, args, out: Path) -> dict:
    import lightning as L

    fast, precision, cl, comp, loop = PATHS[path]
    gpu = args.accelerator == "cuda"
    device = torch.device("cuda" if gpu else "cpu")
    # bf16 without native kernels is many times slower than fp32: fewer steps (OneCycle needs >= 6 steps)
    warmup, window, n_win = (1, max(2, args.window // 3), 3) if path == "c_bf16" and not native_bf16(
        args.accelerator) else (args.warmup, args.window, args.windows)
    n_steps = warmup + window * n_win
    cfg = compose_cfg(out / f"{model}_{path}", args.data_root, tiny=False, overrides=[
        f"model={model}", *args.data_overrides, f"data.fast={fast}", f"data.batch_size={args.batch}", f"trainer.precision={precision}",
        f"model.channels_last={cl}", f"model.compile={comp}", f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        f"data.keep_on_device={gpu}", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={n_steps}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
        "callbacks.model_checkpoint=null", "callbacks.model_summary=null", "seed=0",
        f"threads={args.threads if args.threads else 'null'}"])
    L.seed_everything(0, verbose=False)
    set_threads(cfg.get("threads"))
    prec = resolve_precision(precision, args.accelerator)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    load0 = loadavg()
    reset_peak_rss()
    reset_peak_gpu(device)
    t_start = time.perf_counter()
    if loop == "plain":
        times = plain_loop(cfg, dm, n_steps, prec, device)
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
        "model": model, "path": path, "device": args.device,
        "data": "fast" if fast else "torchvision PIL DataLoader", "precision": prec, "channels_last": cl, "compile": comp, "loop": loop, "batch": args.batch, "threads": torch.get_num_threads(),
        "steps": f"{warmup} warm-up + {n_win} x {window}", "train_img_s": median(rates),
        "train_img_s_windows": [round(r, 1) for r in rates],
        # the first step holds the compilation (forward and backward graphs): its excess over a normal step
        "compile_s": round(times[0] - t_start - step_s, 1) if comp and step_s else None,
        "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu_mb(device), "loadavg_before": load0,
    }
    if loop == "lightning":  # (e) would repeat c's numbers
        # a compiled net would recompile for eval mode; inference is timed on the net it wraps
        net = getattr(net, "_orig_mod", net)
        row["infer_img_s"] = median(inference_rates(net, dm, args.batch, n_win, prec, device))
    row["loadavg_after"] = loadavg()
    print(json.dumps({k: v for k, v in row.items() if k != "train_img_s_windows"}), flush=True)
    return row


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
    row["peak_gpu_mb"] = max((r["peak_gpu_mb"] for r in runs if r["peak_gpu_mb"] is not None), default=None)
    # compile caches persist in the process: only the first repeat compiled cold, and that is the cost a user pays
    row["compile_s"] = runs[0].get("compile_s")
    row["loadavg_after"] = runs[-1]["loadavg_after"]
    return row


def load_script(name: str) -> ModuleType:
    """A sibling script (scripts/<name>.py) as a module, however this one was started."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    p.add_argument("--precision-compare", action="store_true",
                   help="train the recipe at 32-true and at bf16-mixed per seed; compare test accuracy")
    p.add_argument("--precision-seeds", nargs="+", type=int, default=[0])
    p.add_argument("--precision-overrides", nargs="*", default=[],
                   help="train.py overrides naming the compared recipe; none = the default (bn_gap, 10 epochs)")
    p.add_argument("--allow-emulated-bf16", action="store_true",
                   help="run --precision-compare even where bf16 is emulated (takes hours on real data)")
    p.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu",
                   help="device of every measurement; rows record it, and other devices' rows are kept")
    p.add_argument("--search", nargs="*", default=None, metavar="CANDIDATE",
                   help="the experiment=fast recipe search (scripts/fast_search.py, validation accuracy only); "
                        "no names = every candidate")
    p.add_argument("--search-seeds", nargs="+", type=int, default=[0])
    p.add_argument("--synthetic", action="store_true", help="tiny fake data, few steps: a smoke test")
    p.add_argument("--json", type=Path, help="default: docs/benchmarks.json (with --synthetic: not written)")
    p.add_argument("--md", type=Path,
                   help="its tables are rewritten; default: docs/BENCHMARKS.md (with --synthetic: none)")
    args = p.parse_args(argv)
    args.tta = [r for r in args.tta if r]
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1 (got {args.repeats})")
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        p.error(f"--accelerator cuda: torch {torch.__version__} sees no CUDA GPU here (torch.cuda.is_available() is "
                "False); run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --accelerator cpu")
    fast_search = load_script("fast_search") if args.search is not None else None
    if fast_search is not None:  # before anything is measured
        if args.accelerator != "cpu":
            p.error("--search is a CPU measurement (scripts/fast_search.py's plain loop): run it without "
                    "--accelerator cuda")
        try:
            fast_search.choose(args.search)
        except ValueError as e:
            p.error(f"--search: {e}")
    if args.precision_compare and not args.synthetic:
        try:
            check_bf16(args.accelerator, args.allow_emulated_bf16)
        except UserError as e:
            p.error(str(e))
    docs = (ROOT / "docs").resolve()
    if args.synthetic and any(f is not None and f.resolve().is_relative_to(docs) for f in (args.json, args.md)):
        p.error("--synthetic measures fake data: send its --json / --md outside docs/ (e.g. --json /tmp/b.json "
                "--md /tmp/b.md), so the measured numbers there stay")
    if not args.synthetic:  # a smoke test's numbers reach the docs only where --json / --md send them
        args.json = args.json or ROOT / "docs" / "benchmarks.json"
        args.md = args.md or ROOT / "docs" / "BENCHMARKS.md"
    # the CPU's name too: rows of two different CPUs must not replace or be compared with each other
    args.device = torch.cuda.get_device_name(0) if args.accelerator == "cuda" else f"cpu: {cpu_name()}"
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="fmnist_bench_") as tmp:
        out = Path(tmp)
        args.data_root, args.data_overrides, args.smoke_overrides = ROOT / "data", [], []
        if args.synthetic:
            make_synthetic(out / "data")
            args.data_root = out / "data"
            args.data_overrides = [f"data.root={args.data_root}", "logger=csv", "data.check_md5=false",
                                   "data.download=false", "data.val_size=100", "data.eval_batch_size=100"]
            # batch 32: 16 steps on 500 images (OneCycle needs several); one thread: a smoke test must not depend
            # on idle cores (2 OpenMP threads on a busy box spin-wait)
            args.smoke_overrides = ["trainer.max_epochs=1", "data.batch_size=32", "callbacks.progress_bar=null",
                                    "threads=1"]
            args.batch, args.warmup, args.window, args.windows, args.threads = 32, 1, 2, 2, 1
        res = json.loads(args.json.read_text()) if args.json and args.json.exists() and not args.synthetic else {}
        bench_tables.upgrade(res)
        machine = machine_info()
        # new rows replace the JSON's rows of the same key (model, path / recipe, seed ...) and device, so parts
        # can be re-run, and rows of other devices stay

        def save(section: str, rows: list[dict], key: tuple[str, ...]) -> None:
            bench_tables.merge(res, section, rows, key, machine)
            if args.json:  # after every part: a long run should not lose the parts before it
                args.json.parent.mkdir(parents=True, exist_ok=True)
                write_json(args.json, res)

        if not args.no_throughput:
            # --repeats R: every (model, path) R times, interleaved (a b c .. a b c ..), so slow drift of a shared
            # or throttled machine hits every path alike; the windows of all repeats are pooled into one median
            runs = [run_path(m, path, args, out) for _ in range(args.repeats) for m in args.models
                    for path in args.paths]
            keys = dict.fromkeys((r["model"], r["path"]) for r in runs)
            save("throughput", [{**pool_repeats([r for r in runs if (r["model"], r["path"]) == k]), "command": command}
                                for k in keys], ("model", "path", "device"))
        for recipe in args.tta:  # rows' "command" is the train.py command; the benchmark's is kept beside it
            save("time_to_accuracy", [{**time_to_accuracy(recipe, s, args, out), "benchmark_command": command}
                                      for s in (args.default_seeds if recipe == "default" else args.tta_seeds)],
                 ("recipe", "seed", "device"))
        for seed in args.precision_seeds if args.precision_compare else []:
            save("precision_compare", [{**r, "benchmark_command": command}
                                       for r in precision_compare(seed, args, out)],
                 ("recipe", "seed", "precision", "device"))
        if fast_search is not None:  # plain-PyTorch loop on the CPU, validation accuracy only (never test)
            smoke = {"check_md5": False, "download": False, "val_size": 100} if args.synthetic else {}
            dm = FashionMNISTDataModule(root=str(args.data_root), **smoke)
            dm.setup()
            try:
                rows = fast_search.search(args.search, args.search_seeds, args.threads or os.cpu_count() or 1, dm)
            except ValueError as e:  # too few steps for the data (tiny smoke data only)
                p.error(f"--search: {e}")
            save("recipe_search", [{**r, "benchmark_command": command} for r in rows], ("candidate", "seed", "device"))
    if args.md is not None:
        bench_tables.update_markdown(args.md, res)
    print(bench_tables.tables(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
