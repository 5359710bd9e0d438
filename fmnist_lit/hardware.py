"""What the machine can do: the CPU's bf16 support, the precision `auto` resolves to, and a one-line description.

`trainer.precision: ${auto_precision:${trainer.accelerator}}` (conf/trainer/default.yaml; the resolver is
registered in fmnist_lit/__init__.py) is resolved once, when the run's config is resolved, so the saved
`config.yaml` records the precision that was used and `eval.py` reuses it instead of deciding again on another
machine.

On a CPU, `auto` picks bf16-mixed only where oneDNN has native bf16 kernels (AVX512-BF16 or AMX) AND a short
micro-benchmark (a small conv net, forward + backward, channels_last) says bf16 is faster there than fp32: native
bf16 support does not guarantee a speed-up for small convnets. The measurement is cached per CPU model, torch
version and thread count in `$XDG_CACHE_HOME/fmnist_lit/precision.json` (delete it to measure again).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
# bf16 must beat fp32 by this factor: a tie is not worth bf16's rounding
SPEEDUP_NEEDED = 1.1


def cpu_bf16_features() -> dict[str, bool]:
    """The CPU's native bf16 instruction sets. Called directly, never behind try/except: if torch renames these
    probes again, this fails loudly (and tests/test_hardware.py fails) instead of every CPU silently reading
    'no bf16'."""
    return {
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def _probe_net() -> nn.Module:
    # a small BN convnet with the shapes this project trains: (B, 1, 28, 28) -> (B, 10)
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def _step_seconds(steps: int = 5, warmup: int = 3, batch: int = 128) -> tuple[float, float]:
    """Median seconds of one training step (forward + backward + SGD) in fp32 and in bf16 autocast. The two are
    interleaved step by step, so a machine whose load drifts slows both alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    nets = [_probe_net().to(memory_format=torch.channels_last) for _ in range(2)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.01) for n in nets]
    times: list[list[float]] = [[], []]
    for i in range(warmup + steps):
        for bf16, (net, opt) in enumerate(zip(nets, opts)):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
                loss = nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= warmup:
                times[bf16].append(time.perf_counter() - t0)
    fp32, bf16 = (sorted(t)[len(t) // 2] for t in times)
    return fp32, bf16


def _cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fmnist_lit" / "precision.json"


def cpu_precision() -> tuple[str, str]:
    """(precision, reason) for training on this CPU; measured once per CPU model, torch version, thread count."""
    features = cpu_bf16_features()
    if not any(features.values()):
        return "32-true", "no AVX512-BF16 or AMX: bf16 would be emulated, many times slower than fp32"
    key = f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        fp32, bf16 = _step_seconds()
        cache[key] = {"fp32_ms": round(1e3 * fp32, 2), "bf16_ms": round(1e3 * bf16, 2)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache, indent=1) + "\n")
        except OSError:
            # a read-only home only costs the measurement next time
            pass
    ms = cache[key]
    speedup = ms["fp32_ms"] / ms["bf16_ms"]
    names = "+".join(k for k, v in features.items() if v)
    if speedup >= SPEEDUP_NEEDED:
        return "bf16-mixed", f"native bf16 ({names}) and {speedup:.2f}x faster than fp32 on a probe convnet"
    return "32-true", f"native bf16 ({names}) but only {speedup:.2f}x fp32's speed on a probe convnet"


def resolve_precision(precision: object, accelerator: str = "auto") -> str:
    """`auto` -> what this machine trains fastest without emulation; anything else is returned unchanged.
    GPU: bf16-mixed where it is native (Ampere or later), else 16-mixed. CPU: `cpu_precision()`."""
    if str(precision) != "auto":
        return str(precision)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return _auto_precision(gpu)


# decided and logged once per process, however often the config is resolved
@functools.cache
def _auto_precision(gpu: bool) -> str:
    if gpu:
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        choice, reason = (
            ("bf16-mixed", "native on this GPU") if native else ("16-mixed", "bf16 not native here")
        )
    else:
        choice, reason = cpu_precision()
    log.info("precision=auto -> %s (%s)", choice, reason)
    return choice
