"""Where a training step's time goes, on this machine: per op, and each layer's FLOP/s.

One net (`--model`, any registered one, with --overrides), a batch of random (B, 1, 28, 28) images, and the
training step as train.py takes it: the LightningModule's net (channels_last as `model.channels_last` says),
its loss, the configured optimiser, under the autocast of --precision. Measured, in this order:

  step       images/s of the whole step, and the FLOP/s that is (forward FLOPs from torch's FlopCounterMode,
             x 3 for forward + backward)
  ops        each aten op's share of the step's CPU time (torch.profiler, self time), the --top largest
  layers     each nn.Conv2d and nn.Linear alone, on the input it gets in the net (the whole batch): forward,
             and forward + backward (x 3 FLOPs; x 2 where its input needs no gradient: the images)

A layer far below the others' FLOP/s is where a kernel, not the arithmetic, limits the step; the fastest layer's
rate bounds what the whole step could reach with this CPU's kernels. The row is printed and appended as one JSON
line to --results. Data loading and augmentation are not in it (benchmarks/throughput.py times the whole
Lightning step).

    python benchmarks/step_profile.py --model speed_net --batch 512 --threads 2
    python benchmarks/step_profile.py --model bn_gap --batch 128 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.throughput import RESULTS, compose_or_usage, print_table, record
from fmnist_lit.hardware import resolve_precision

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def seconds_per_call(fn: Callable[[], Any], warmup: int, calls: int) -> float:
    """The median seconds of `calls` calls of fn, after `warmup` untimed ones (oneDNN picks its kernels)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def layer_inputs(net: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, layer, a copy of its input) for each nn.Conv2d and nn.Linear, in the order one forward uses them;
    the copy needs a gradient where the input did in the net (not the images)."""
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []

    def keep(name: str, m: nn.Module, inp: torch.Tensor) -> None:
        seen.append((name, m, inp.detach().clone().requires_grad_(inp.requires_grad)))

    hooks = [
        m.register_forward_pre_hook(lambda m, args, name=name: keep(name, m, args[0]))
        for name, m in net.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    net(x)
    for h in hooks:
        h.remove()
    return seen


def time_layer(name: str, layer: nn.Module, inp: torch.Tensor, args) -> dict[str, Any]:
    """One layer alone on its input from the net: forward, and forward + backward."""
    f = forward_flops(layer, inp)
    grad = torch.randn_like(layer(inp))
    fwd = seconds_per_call(lambda: layer(inp), args.warmup, args.steps)
    both = seconds_per_call(lambda: layer(inp).backward(grad), args.warmup, args.steps)
    # backward: the weight gradient, and the input's where it needs one (not the images')
    backward_flops = (2 if inp.requires_grad else 1) * f
    return {
        "layer": name,
        "input": list(inp.shape),
        "fwd_mflop": round(f / 1e6, 1),
        "fwd_ms": round(fwd * 1e3, 2),
        "fwd_gflop_s": round(f / fwd / 1e9, 1),
        "fwd_bwd_ms": round(both * 1e3, 2),
        "fwd_bwd_gflop_s": round((f + backward_flops) / both / 1e9, 1),
    }


def profile_step(cfg, args) -> dict[str, Any]:
    prec = resolve_precision(args.precision, "cpu")
    dtype = AUTOCAST.get(prec)
    lit = instantiate(cfg.model)
    net, criterion = lit.net.train(), lit.criterion
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))

    def autocast():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    def step() -> None:
        with autocast():
            loss = criterion(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = seconds_per_call(step, args.warmup, args.steps)
    with autocast():
        flops_per_image = 3 * forward_flops(net, x) / args.batch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]

    with autocast():
        layers = [time_layer(*layer, args) for layer in layer_inputs(net, x)]
    return {
        "kind": "step_profile",
        "model": cfg.model.net._target_.rsplit(".", 1)[-1],
        "overrides": " ".join(args.overrides),
        "precision": prec,
        "batch": args.batch,
        "img_s": round(args.batch / step_s, 1),
        "step_mflop_per_image": round(flops_per_image / 1e6, 1),
        "step_gflop_s": round(flops_per_image * args.batch / step_s / 1e9, 1),
        "ops": {e.key: round(e.self_cpu_time_total / total, 4) for e in ops},
        "layers": layers,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="speed_net", help="a conf/model/ name")
    p.add_argument(
        "--overrides", nargs="*", default=[], help="train.py overrides, e.g. 'model.net.widths=[32,64,64]'"
    )
    p.add_argument("--batch", type=int, default=512)
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "32-true", *AUTOCAST],
        help="auto: train.py's choice on this machine",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each timing (>= 1)")
    p.add_argument("--steps", type=int, default=5, help="timed calls of each; the median counts")
    p.add_argument("--top", type=int, default=10, help="ops listed")
    p.add_argument("--threads", type=int, help="torch threads (default: every core)")
    p.add_argument("--results", type=Path, default=RESULTS, help="the JSON line is appended here")
    args = p.parse_args(argv)
    args.command = "python benchmarks/step_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if min(args.warmup, args.steps, args.batch, args.top) < 1:
        p.error("--warmup, --steps, --batch and --top must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    # record() reads these
    args.accelerator, args.synthetic = "cpu", False
    torch.manual_seed(0)
    cfg = compose_or_usage(p, [f"model={args.model}", *args.overrides])
    row = record(profile_step(cfg, args), args)
    print()
    print(
        f"{row['model']} {row['precision']} batch {row['batch']}: {row['img_s']:.0f} img/s, "
        f"{row['step_gflop_s']:.0f} GFLOP/s ({row['step_mflop_per_image']:.0f} MFLOP per image)"
    )
    print_table([{"op": k, "share": f"{v:.1%}"} for k, v in row["ops"].items()], "op share")
    print_table(row["layers"], "layer input fwd_mflop fwd_ms fwd_gflop_s fwd_bwd_ms fwd_bwd_gflop_s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
