"""Measurement helpers for `scripts/benchmark.py`: step timing, per-epoch test accuracy for time-to-accuracy,
peak memory and a description of the machine. Nothing here changes what a run learns."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from fmnist_lit.data import normalize_uint8
from fmnist_lit.utils import cpu_name, cpu_supports_bf16


class StepTimer(L.Callback):
    """Wall time (perf_counter, s) after every optimiser step; windows of `window` steps after `warmup` steps.

    The time between two `on_train_batch_end`s holds everything a step costs: fetching and transforming the batch,
    forward, backward, optimiser, scheduler, logging and the progress bar. On a GPU it waits for the step's kernels
    first: they run asynchronously, and a timer read while they are queued would time the launches only.
    """

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.times.append(time.perf_counter())


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on a CUDA device, so that a perf_counter read next measures finished work; a
    no-op on the CPU (its ops return when done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window_rates(times: list[float], batch: int, warmup: int, window: int) -> list[float]:
    """Images/s of each full window of `window` steps after the first `warmup` steps.

    `times[i]` is taken right after step i; the first window starts at `times[warmup - 1]` (so warm-up >= 1).
    """
    rates = []
    start = max(warmup, 1) - 1
    while start + window < len(times):
        rates.append(window * batch / (times[start + window] - times[start]))
        start += window
    return rates


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


class TimeToAccuracy(L.Callback):
    """After every training epoch, evaluate the test set (not used for selection or checkpoints) and append
    `{"epoch", "test_acc", "unix_time", "train_start_unix_time"}` to `<output_dir>/time_to_accuracy.json`; with
    `stop_at`, end the fit once test accuracy reaches it (the benchmark does this for the slow default recipe).
    `train_start_unix_time` (just before the first training step) splits start-up (imports, config, data,
    trainer, and the sanity-check validation step where one runs) from training in the benchmark's table.

    Wall time is left to the caller (the benchmark subtracts its own launch time, so imports count). The
    test evaluation runs inside the timed run, so its own cost is included in every later time.
    """

    def __init__(self, output_dir: str, batch_size: int = 1000, stop_at: float | None = None) -> None:
        self.path = Path(output_dir) / "time_to_accuracy.json"
        self.batch_size, self.stop_at = batch_size, stop_at
        self.rows: list[dict[str, Any]] = []
        self.train_start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start = time.time()

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or dm.test_x is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        correct = 0
        # the trainer's precision plugin gives the same autocast as training (bf16-mixed or none)
        with trainer.precision_plugin.forward_context():
            for i in range(0, len(dm.test_x), self.batch_size):
                x = normalize_uint8(dm.test_x[i:i + self.batch_size]).to(pl_module.device)
                if dm.hparams.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                pred = pl_module(x).argmax(1).cpu()
                correct += int((pred == dm.test_y[i:i + self.batch_size]).sum())
        pl_module.train(was_training)
        self.rows.append({"epoch": trainer.current_epoch + 1, "test_acc": correct / len(dm.test_x),
                          "unix_time": time.time(), "train_start_unix_time": self.train_start})
        self.path.write_text(json.dumps(self.rows, indent=1) + "\n")
        if self.stop_at is not None and self.rows[-1]["test_acc"] >= self.stop_at:
            trainer.should_stop = True  # only to save benchmark time: later epochs would not change the result


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0); no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory (MiB) since the last `reset_peak_rss()` (or process start where it cannot reset)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def reset_peak_gpu(device: torch.device) -> None:
    """Reset CUDA's peak-allocation counter of `device`; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mb(device: torch.device) -> float | None:
    """Peak GPU memory held by tensors (MiB) since the last `reset_peak_gpu`; None on the CPU."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    flags = cpu_flags()
    import torchvision

    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags, "native_bf16 (cpu_supports_bf16)": cpu_supports_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "torchvision": torchvision.__version__, "lightning": L.__version__,
        "python": platform.python_version(), "os": platform.platform(),
    }
