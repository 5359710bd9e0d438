"""Multirun plumbing around Hydra's own sweepers and launchers (no launcher of our own).

- Hydra 1.3's BasicSweeper raises the first failed job's exception after its batch, which skips
  `on_multirun_end` (no leaderboard, no list of failures). So under MULTIRUN `main()` records a failure in the job's
  folder (`error.txt`) and returns None; `SweepSummary.on_multirun_end` then writes the leaderboard, lists every
  failed job and exits non-zero.
- The Optuna sweeper is different: it marks a trial FAIL only when the job raises (a returned None/NaN would be
  told to Optuna as a COMPLETE value), and it keeps searching while failures <= `max_failure_rate`. So under Optuna
  the failure is recorded *and* re-raised.
- Parallel jobs (joblib) get `threads = cores // n_jobs` so that they split the cores instead of oversubscribing.
- DDP (`strategy=ddp`) re-launches `sys.argv` for ranks > 0; inside a multirun that argv is the whole sweep
  (Lightning#11300). `ddp_relaunch_as_single_run` makes the re-launch a single run of *this* job in *this* folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from fmnist_lit.leaderboard import find_jobs, write_leaderboard

log = logging.getLogger(__name__)
ERROR_FILE = "error.txt"
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")  # set by Lightning's launcher


def _target(node: Any) -> str:
    return str(node.get("_target_", "")) if node is not None else ""


def record_failure(output_dir: str | Path, exc: BaseException) -> None:
    """`error.txt` in the job folder: one summary line (read by the leaderboard), then the traceback."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    (out / ERROR_FILE).write_text(summary + "\n\n" + "".join(traceback.format_exception(exc)))
    log.error("job failed: %s (details in %s)", summary, out / ERROR_FILE)


def sweeper_wants_exceptions() -> bool:
    """True under the Optuna sweeper, which turns a raised exception into a FAIL trial (see module doc)."""
    return "optuna" in _target(HydraConfig.get().sweeper).lower()


def set_job_threads(cfg: DictConfig) -> None:
    """Under the joblib launcher: `threads = cores // n_jobs` unless set; warn when jobs x threads > cores."""
    launcher = HydraConfig.get().launcher
    if "joblib" not in _target(launcher).lower():
        return
    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores, -2 = all but one
    if cfg.get("threads") is None:
        with open_dict(cfg):
            cfg.threads = max(1, cores // n_jobs)
    elif cfg.threads * n_jobs > cores:
        log.warning("threads=%d x n_jobs=%d > %d cores: jobs will slow each other down", cfg.threads, n_jobs, cores)


@contextlib.contextmanager
def ddp_relaunch_as_single_run(cfg: DictConfig) -> Iterator[None]:
    """For `strategy=ddp` inside a sequential multirun: Lightning builds the ranks' command line from `sys.argv`
    plus `hydra.run.dir=<HydraConfig run.dir>`. Point both at this job (its overrides, its folder) so the other ranks
    join this job instead of starting the sweep again; restored afterwards for the next job."""
    strategy = cfg.trainer.get("strategy")
    name = strategy if isinstance(strategy, str) else _target(strategy)
    if not name.lower().startswith("ddp") or "spawn" in name.lower() or "fork" in name.lower():
        yield
        return
    hc = HydraConfig.get()
    launcher = _target(hc.launcher).lower()
    if "submitit" in launcher:  # on SLURM every rank is a task started by SLURM: Lightning re-launches nothing
        yield
        return
    if "basic" not in launcher:
        raise RuntimeError(f"trainer.strategy={name} inside a multirun works with the basic (sequential) launcher "
                           "only; on a cluster use hydra/launcher=slurm, which starts one task per rank")
    argv, run_dir = sys.argv, hc.run.dir
    env = {k: os.environ.get(k) for k in DDP_ENV}
    sys.argv = [argv[0], *hc.overrides.task]
    with read_write(hc.run):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hc.run):
            hc.run.dir = run_dir
        # the launcher leaves LOCAL_RANK & co. in os.environ and the process group open: the next job would take
        # them as "ranks already started" and talk to the finished job's dead ranks
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class FailOnNonFiniteLoss(L.Callback):
    """Raise as soon as the training loss is NaN/inf: a diverged trial fails fast (and Optuna records FAIL)
    instead of training on for its remaining epochs. Checks every `every_n_steps` (each check syncs a GPU)."""

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if batch_idx % self.every_n_steps == 0 and loss is not None and not torch.isfinite(loss).all():
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {trainer.current_epoch}, "
                                     f"step {trainer.global_step}: diverged (learning rate too high?)")


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks` in conf/train.yaml): at the end of a multirun write the leaderboard,
    list the failed jobs, and exit non-zero if any failed (`fail_on_error`)."""

    def __init__(self, leaderboard: bool = True, fail_on_error: bool = True) -> None:
        self.leaderboard, self.fail_on_error = leaderboard, fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = [j for j in find_jobs(sweep_dir) if j.failed]
        if self.leaderboard:
            try:  # a leaderboard bug must not hide failed jobs or the exit status
                summaries, _ = write_leaderboard(sweep_dir)
                log.info("leaderboard (%d configurations): %s", len(summaries), sweep_dir / "leaderboard.md")
            except Exception as e:  # noqa: BLE001 (any error: report it and go on to the failures)
                log.error("could not write the leaderboard: %s: %s", type(e).__name__, e)
        if not failed:
            return
        lines = [f"  job {j.path.name}: {' '.join(f'{k}={v}' for k, v in j.overrides.items())}: {j.error}"
                 for j in failed]
        print(f"{len(failed)} failed job(s) in {sweep_dir}:\n" + "\n".join(lines), file=sys.stderr)
        if self.fail_on_error:
            # SystemExit, not an exception: Hydra's callback runner turns exceptions into warnings
            sys.exit(1)
