"""Plain-PyTorch search for `experiment=fast`: train candidate (net, epochs, batch, lr) on the 55k training
split and score on the 5k validation split (never the test set), printing training seconds (validation excluded)
and val accuracy every half epoch. `scripts/benchmark.py --search` runs it and writes the "Recipe search" table
of docs/BENCHMARKS.md; on its own it only prints:

python scripts/fast_search.py                    # every candidate, 2 threads, seed 0 (~6 min on the 2-core CPU)
python scripts/fast_search.py --only pf2-e2-b128 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, not the venv's

import torch
from torch import nn

from fmnist_lit.data import FashionMNISTDataModule, normalize_uint8
from fmnist_lit.models import FastCNN
from fmnist_lit.utils import cpu_name

W16, W24 = (16, 32, 64), (24, 48, 96)
PF, PF2 = {"pool_first": True}, {"pool_first": True, "extra": (0, 0, 1)}


def stride2_stem_net() -> nn.Module:
    """pf2 without the 28x28 layer: a 3x3 stride-2 conv-BN-ReLU stem (B, 1, 28, 28) -> (B, 16, 14, 14), then
    pf2's 32/64 pool-first stages and the extra conv on the 3x3 maps. Skips the full-resolution conv and pool:
    ~5% of pf2's multiply-adds (0.11 of 2.26 MMAC) but its largest activations, (B, 16, 28, 28), where the
    memory-bound pool and its backward run."""
    def cbr(ci: int, co: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

    def pool_first(ci: int, co: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(co),
                             nn.ReLU(inplace=True))

    return nn.Sequential(cbr(1, 16, 2), pool_first(16, 32), pool_first(32, 64), cbr(64, 64), nn.Flatten(),
                         nn.Linear(64 * 3 * 3, 10))


CANDIDATES = {  # name: (FastCNN kwargs or a net builder, epochs, batch, peak lr); AdamW, one-cycle, LS 0.1 for all
    "old24-e2-b256": ({"widths": W24}, 2, 256, 0.01),       # conv -> BN -> ReLU -> pool (the session-1 layout)
    "pf24-e2-b256": ({"widths": W24, **PF}, 2, 256, 0.01),  # same net, pool first: same accuracy, faster
    "pf24-e1-b128": ({"widths": W24, **PF}, 1, 128, 0.01),
    "pf24-e1.5-b128": ({"widths": W24, **PF}, 1.5, 128, 0.01),
    "pf2-e1.5-b128": ({"widths": W16, **PF2}, 1.5, 128, 0.01),
    "pf2-e2-b256": ({"widths": W16, **PF2}, 2, 256, 0.01),
    "pf2-e2-b128": ({"widths": W16, **PF2}, 2, 128, 0.01),    # experiment=fast
    # session 3, looking for <= 30 s: fewer steps, narrower nets, no 28x28 layer (none beat pf2-e2-b128)
    "pf2-e2-b512": ({"widths": W16, **PF2}, 2, 512, 0.02),
    "pf2-e1.5-b256": ({"widths": W16, **PF2}, 1.5, 256, 0.01),
    "pf2w12-e2-b128": ({"widths": (12, 24, 48), **PF2}, 2, 128, 0.01),
    "pf2w8-e3-b128": ({"widths": (8, 16, 32), **PF2}, 3, 128, 0.01),
    "s2stem-e2-b256": (stride2_stem_net, 2, 256, 0.01),
}


def schedule(epochs: float, bs: int, n: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for `epochs` over `n` training images at batch `bs` (at least one step an
    epoch: a batch larger than the split, as on tiny smoke data, is one short step)."""
    per_epoch = max(1, n // bs)
    return per_epoch, int(epochs * per_epoch)


def choose(names: list[str] | None) -> dict[str, tuple]:
    """The candidates named (None or empty: all), in CANDIDATES' order; unknown names are an error."""
    unknown = set(names or ()) - set(CANDIDATES)
    if unknown:
        raise ValueError(f"unknown candidate(s) {sorted(unknown)}; choose from {', '.join(CANDIDATES)}")
    return {name: c for name, c in CANDIDATES.items() if not names or name in names}


def describe(net_kw: dict | Callable[[], nn.Module]) -> str:
    if callable(net_kw):
        return net_kw.__name__
    kw = {"widths": (16, 32, 64), "pool_first": False, "extra": None, **net_kw}
    return (f"FastCNN {'/'.join(map(str, kw['widths']))}, {'pool first' if kw['pool_first'] else 'conv-BN-ReLU-pool'}"
            + (f", extra={list(kw['extra'])}" if kw["extra"] else ""))


def run(name: str, net_kw: dict | Callable[[], nn.Module], epochs: float, bs: int, lr: float, dm, threads: int,
        seed: int) -> dict[str, Any]:
    """Train one candidate on `dm`'s training split; validation accuracy every half epoch and at the end."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = (net_kw() if callable(net_kw) else FastCNN(**net_kw)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4, fused=True)  # as experiment=fast
    n = len(dm.train_x)
    per_epoch, steps = schedule(epochs, bs, n)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    xv = normalize_uint8(dm.val_x).contiguous(memory_format=torch.channels_last)  # (5000, 1, 28, 28)
    train_s, step, scores = 0.0, 0, {}
    while step < steps:
        order = torch.randperm(n)
        t0 = time.perf_counter()
        for i in range(per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            x = normalize_uint8(dm.train_x[idx]).contiguous(memory_format=torch.channels_last)
            loss = crit(net(x), dm.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % per_epoch in (0, per_epoch // 2) or step == steps:  # every half epoch and the end
                train_s += time.perf_counter() - t0
                net.eval()
                with torch.no_grad():
                    acc = (net(xv).argmax(1) == dm.val_y).float().mean().item()
                net.train()
                scores[f"{step / per_epoch:.1f}"] = round(acc, 4)
                t0 = time.perf_counter()
            if step == steps:
                break
    row = {"candidate": name, "seed": seed, "device": f"cpu: {cpu_name()}", "net": describe(net_kw), "epochs": epochs, "batch": bs,
           "peak_lr": lr, "threads": threads, "train_s": round(train_s, 1), "val_acc_by_epoch": scores,
           "val_acc": list(scores.values())[-1]}
    print(f"{name:16s} seed {seed}  train {train_s:5.1f} s  val acc at epoch  "
          + " ".join(f"{e}:{a:.4f}" for e, a in scores.items()), flush=True)
    return row


def search(names: list[str] | None, seeds: list[int], threads: int, dm) -> list[dict[str, Any]]:
    """Every candidate in `names` (None or empty: all) x `seeds`, candidates in CANDIDATES' order."""
    chosen, n = choose(names), len(dm.train_x)
    # one-cycle with 25% warm-up needs >= 5 steps; only tiny smoke data (--synthetic) has so few batches
    short = [name for name, (_, epochs, bs, _) in chosen.items() if schedule(epochs, bs, n)[1] < 5]
    if short:
        raise ValueError(f"{', '.join(short)}: fewer than 5 steps on {n} training images, too few for one-cycle; "
                         "choose candidates with smaller batches or more epochs")
    return [run(name, *c, dm, threads, seed) for name, c in chosen.items() for seed in seeds]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help=f"candidates (default all): {', '.join(CANDIDATES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--data-root", default=str(ROOT / "data"))
    a = p.parse_args()
    dm = FashionMNISTDataModule(root=a.data_root)
    dm.setup()
    try:
        search(a.only, a.seeds, a.threads, dm)
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
