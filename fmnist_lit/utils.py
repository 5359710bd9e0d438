"""Small helpers for a run: hardware-dependent defaults, config checks, the metrics file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig


class UserError(ValueError):
    """Bad input from the command line or config: reported as one line, no traceback."""


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX). On plain AVX2 bf16 is emulated and
    slower than fp32 (measured in docs/BENCHMARKS.md), so `precision=auto` stays fp32 there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            torch._C._cpu._is_amx_tile_supported() or torch._C._cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(accelerator: str) -> bool:
    """True where bf16 autocast runs on native kernels of `accelerator` ("cpu" or "cuda"): a CUDA GPU of the Ampere
    generation or later, or a CPU per `cpu_supports_bf16`. Elsewhere bf16 is emulated, hence slow."""
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_supports_bf16()


def resolve_precision(precision: Any, accelerator: str) -> str:
    """`auto` -> `bf16-mixed` where the chosen device does bf16 natively; else `16-mixed` on a GPU, `32-true` on
    a CPU."""
    if str(precision) != "auto":
        return str(precision)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if native_bf16("cuda") else "16-mixed"  # pre-Ampere GPUs emulate bf16: fp16 there
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


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


def validate_config(cfg: DictConfig) -> None:
    """Catch the mistakes people type on the command line before any work starts."""
    t, d = cfg.trainer, cfg.data
    if t.get("max_epochs") is not None and t.max_epochs < -1:  # -1 is Lightning's 'no limit'
        raise UserError(f"trainer.max_epochs={t.max_epochs}: must be a positive number of epochs")
    if t.get("max_epochs") == 0:
        raise UserError("trainer.max_epochs=0: nothing would be trained; use eval.py to test a checkpoint")
    for key in ("batch_size", "eval_batch_size"):
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise UserError(f"data.{key}={v}: must be a positive integer")
    vs = d.get("val_size", 0)
    if not isinstance(vs, int) or not 0 <= vs < 60_000:
        raise UserError(f"data.val_size={vs}: must be an integer in [0, 59999] (carved from the 60k training set)")
    if cfg.get("threads") is not None and (not isinstance(cfg.threads, int) or cfg.threads <= 0):
        raise UserError(f"threads={cfg.threads}: must be a positive integer or null (all cores)")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path}: no such file")
    es = cfg.callbacks.get("early_stopping") if cfg.get("callbacks") else None
    if vs == 0 and es is not None and str(es.get("monitor", "")).startswith("val/"):
        raise UserError("early stopping monitors a validation metric but data.val_size=0: "
                        "set data.val_size > 0 or drop callbacks.early_stopping")


def to_jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist() if x.ndim else x.item()
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
