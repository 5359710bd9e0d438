"""Plain-PyTorch search for `experiment=fast`: train candidate (net, epochs, batch, lr) on the 55k training
split and score on the 5k validation split (never the test set), printing training seconds (validation excluded)
and val accuracy every half epoch. The numbers behind the recipe in docs/BENCHMARKS.md come from

python scripts/fast_search.py                    # every candidate, 2 threads, seed 0 (~6 min on the 2-core CPU)
python scripts/fast_search.py --only pf2-e2-b128 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not the venv's

import torch
from torch import nn

from fmnist_lit.data import FashionMNISTDataModule, normalize_uint8
from fmnist_lit.models import FastCNN

W16, W24 = (16, 32, 64), (24, 48, 96)
PF, PF2 = {"pool_first": True}, {"pool_first": True, "extra": (0, 0, 1)}


def stride2_stem_net() -> nn.Module:
    """pf2 without the 28x28 layer: a 3x3 stride-2 conv-BN-ReLU stem (B, 1, 28, 28) -> (B, 16, 14, 14), then
    pf2's 32/64 pool-first stages and the extra conv on the 3x3 maps. Skips the full-resolution conv and pool,
    which cost ~a quarter of a pf2 step on the 2-core CPU for ~5% of its multiply-adds."""
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


def run(name: str, net_kw: dict | Callable[[], nn.Module], epochs: float, bs: int, lr: float, dm, threads: int, seed: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = (net_kw() if callable(net_kw) else FastCNN(**net_kw)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4, fused=True)  # as experiment=fast
    n = len(dm.train_x)
    per_epoch = n // bs
    steps = int(epochs * per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    xv = normalize_uint8(dm.val_x).contiguous(memory_format=torch.channels_last)  # (5000, 1, 28, 28)
    train_s, step, scores = 0.0, 0, []
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
                scores.append(f"{step / per_epoch:.1f}:{acc:.4f}")
                t0 = time.perf_counter()
            if step == steps:
                break
    print(f"{name:16s} seed {seed}  train {train_s:5.1f} s  val acc at epoch  {' '.join(scores)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help=f"candidates (default all): {', '.join(CANDIDATES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    a = p.parse_args()
    dm = FashionMNISTDataModule(root="data")
    dm.setup()
    for name, c in CANDIDATES.items():
        if not a.only or name in a.only:
            for seed in a.seeds:
                run(name, *c, dm, a.threads, seed)


if __name__ == "__main__":
    main()
