"""Plain-PyTorch search for `experiment=fast`: train candidate (net, epochs, batch, lr) on the 55k training
split and score on the 5k validation split (never the test set), printing wall time and val accuracy per epoch.

python scripts/fast_search.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not the venv's

import torch
from torch import nn

from fmnist_lit.data import FashionMNISTDataModule, normalize_uint8
from fmnist_lit.models import FastCNN

CANDIDATES = {  # name: (net kwargs, epochs, batch, peak lr, label smoothing)
    "w16-e2": ({"widths": (16, 32, 64)}, 2, 256, 0.01, 0.1),
    "w16-e3": ({"widths": (16, 32, 64)}, 3, 256, 0.01, 0.1),
    "w24-e2": ({"widths": (24, 48, 96)}, 2, 256, 0.01, 0.1),
    "w12-e3": ({"widths": (12, 24, 48)}, 3, 256, 0.01, 0.1),
}


def run(name, net_kw, epochs, bs, lr, ls, dm, threads):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = FastCNN(**net_kw).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * (len(dm.train_x) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    crit = nn.CrossEntropyLoss(label_smoothing=ls)
    xv = normalize_uint8(dm.val_x).contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    for ep in range(epochs):
        net.train()
        order = torch.randperm(len(dm.train_x))
        for i in range(len(dm.train_x) // bs):
            idx = order[i * bs:(i + 1) * bs]
            x = normalize_uint8(dm.train_x[idx]).contiguous(memory_format=torch.channels_last)
            loss = crit(net(x), dm.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xv).argmax(1) == dm.val_y).float().mean().item()
        print(f"{name} epoch {ep + 1}/{epochs} {time.perf_counter() - t0:6.1f}s val_acc {acc:.4f}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*")
    a = p.parse_args()
    dm = FashionMNISTDataModule(root="data")
    dm.setup()
    for name, c in CANDIDATES.items():
        if not a.only or name in a.only:
            run(name, *c, dm, a.threads)


if __name__ == "__main__":
    main()
