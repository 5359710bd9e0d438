"""Training throughput (images/s) of ResNet sizes on this machine: forward + backward + AdamW step on random
batches, channels_last, bf16 autocast vs fp32. Used to size conf/experiment/resnet*.yaml (docs/RESULTS.md).

    python scripts/resnet_speed.py --sizes 16,32,64x3 32,64,128x1 32,64,128x2 --precision bf16 fp32
    python scripts/resnet_speed.py --sizes 16,32,64x3 --precision bf16 --compile   # eager, then torch.compile
"""

from __future__ import annotations

import argparse
import time

import torch

from fmnist_lit.models import ResNet


def images_per_second(
    widths: list[int], blocks: int, bf16: bool, batch: int, steps: int, compiled: bool = False
) -> float:
    torch.manual_seed(0)
    net = ResNet(widths, blocks).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    # what model.compile=true does; compiles in the warm-up steps
    fwd = torch.compile(net) if compiled else net
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    # two warm-up steps (oneDNN picks and caches kernels; torch.compile compiles)
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    # median step
    return batch / sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["16,32,64x3", "32,64,128x1", "32,64,128x2"],
        help="widths x blocks per stage, e.g. 32,64,128x2",
    )
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time each size under torch.compile")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"threads={torch.get_num_threads()} batch={a.batch}")
    for size in a.sizes:
        w, b = size.split("x")
        widths = [int(v) for v in w.split(",")]
        params = sum(p.numel() for p in ResNet(widths, int(b)).parameters())
        for p in a.precision:
            for compiled in (False, True) if a.compile else (False,):
                ips = images_per_second(widths, int(b), p == "bf16", a.batch, a.steps, compiled)
                print(
                    f"{size:>14} {params / 1e6:.2f}M {p}{' compiled' if compiled else ''}: {ips:7.0f} images/s, "
                    f"{55_000 / ips:6.1f} s per 55k epoch",
                    flush=True,
                )


if __name__ == "__main__":
    main()
