"""Multirun plumbing around Hydra's own sweepers and launchers (no launcher of our own).

- Hydra 1.3's BasicSweeper raises the first failed job's exception after its batch, which skips
  `on_multirun_end` (no leaderboard, no list of failures). So under MULTIRUN `main()` records a failure in the job's
  folder (`error.txt`) and returns None; `SweepSummary.on_multirun_end` then writes the leaderboard, lists every
  failed job and exits non-zero.
- The Optuna sweeper is different: it marks a trial FAIL only when the job raises (a returned None/NaN would be
  told to Optuna as a COMPLETE value), and it keeps searching while failures <= `max_failure_rate`. So under Optuna
  the failure is recorded *and* re-raised.
- Parallel jobs (joblib) get `threads = cores // n_jobs` so that they split the cores instead of oversubscribing.
- DDP (`strategy=ddp`) re-launches `sys.argv` for ranks > 0 (inside a multirun that argv is the whole sweep,
  Lightning#11300), and a thread watching those ranks SIGKILLs the whole process when one of them fails. So under
  the basic launcher a DDP job runs as a single run of train.py in a child process (`run_job_in_child_process`):
  its ranks, their process group and that watcher live and die with the job, and whatever the job leaves behind is
  killed before the next job starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from fmnist_lit.leaderboard import PRUNED, find_jobs, write_leaderboard
from fmnist_lit.run_folder import SWEEP_JOB_ENV

log = logging.getLogger(__name__)
ERROR_FILE = "error.txt"
# set by Lightning's launcher
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# how long rank 0 waits for the other ranks of a finished run before killing them
RANK_EXIT_SECONDS = 60


def _target(node: Any) -> str:
    return str(node.get("_target_", "")) if node is not None else ""


def record_failure(output_dir: str | Path, exc: BaseException) -> None:
    """`error.txt` in the job folder: one summary line (read by the leaderboard), then the traceback. The first
    record wins: a DDP job's ranks fail together, and rank 0 kills the others (and Lightning's watcher kills rank 0
    when another rank dies). So the file is written whole under a temporary name and hard-linked into place: a rank
    killed mid-write leaves no empty `error.txt` that would hide the other rank's record."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    tmp = out / f".{ERROR_FILE}.{os.getpid()}"
    try:
        tmp.write_text(summary + "\n\n" + "".join(traceback.format_exception(exc)))
        os.link(tmp, out / ERROR_FILE)
    except FileExistsError:
        # recorded already (by another rank, or before the ranks were killed)
        return
    finally:
        tmp.unlink(missing_ok=True)
    # an Optuna trial stopped early by its pruner (fmnist_lit/optuna_pruning.py) is an outcome, not an error
    if summary.startswith(PRUNED):
        log.info("job pruned: %s", summary)
    else:
        log.error("job failed: %s (details in %s)", summary, out / ERROR_FILE)


def records_failures() -> bool:
    """True where a failure is recorded in the job folder rather than ending the process: a multirun job, or a
    sweep's DDP job run as a child process (`run_job_in_child_process`) and its ranks."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return multirun or SWEEP_JOB_ENV in os.environ


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
    # joblib: -1 = all cores, -2 = all but one
    n_jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    if cfg.get("threads") is None:
        with open_dict(cfg):
            cfg.threads = max(1, cores // n_jobs)
    elif cfg.threads * n_jobs > cores:
        log.warning(
            "threads=%d x n_jobs=%d > %d cores: jobs will slow each other down", cfg.threads, n_jobs, cores
        )


def _strategy_name(cfg: DictConfig) -> str:
    strategy = cfg.trainer.get("strategy")
    return (strategy if isinstance(strategy, str) else _target(strategy)).lower()


def is_ddp_in_sweep(cfg: DictConfig) -> bool:
    """True for a multirun job with Lightning's script-relaunching `ddp` (not ddp_spawn/fork) on a local launcher."""
    name = _strategy_name(cfg)
    if not name.startswith("ddp") or "spawn" in name or "fork" in name:
        return False
    launcher = _target(HydraConfig.get().launcher).lower()
    # on SLURM every rank is a task started by SLURM: Lightning re-launches nothing
    if "submitit" in launcher:
        return False
    if "basic" not in launcher:
        raise RuntimeError(
            f"trainer.strategy={name} inside a multirun works with the basic (sequential) launcher "
            "only; on a cluster use hydra/launcher=slurm, which starts one task per rank"
        )
    return True


class ChildJobError(RuntimeError):
    """A job run in a child process failed; its own error.txt says why."""


def run_job_in_child_process(cfg: DictConfig) -> dict[str, Any]:
    """Run this multirun job as a single run of train.py in a child process, in this job's folder (Hydra has written
    `.hydra/` there already, so the child writes none), and return its metrics.json. The child gets its own process
    group: after it ends, anything left in that group (a rank orphaned by a killed rank 0) is killed, so no process
    outlives the job. Ctrl-C (which the terminal sends to the sweep's group only) is passed on to the job."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    cmd = [
        sys.executable,
        str(Path(sys.argv[0]).resolve()),
        *hc.overrides.task,
        f'hydra.run.dir="{out}"',
        "hydra.output_subdir=null",
    ]
    env = {k: v for k, v in os.environ.items() if k not in DDP_ENV} | {SWEEP_JOB_ENV: "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
        raise
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            # the job's processes are all gone: the normal case
            pass
    if code == 130:
        raise KeyboardInterrupt
    metrics = out / "metrics.json"
    if code != 0 or not metrics.is_file():
        err = out / ERROR_FILE
        reason = (
            err.read_text().splitlines()[0]
            if err.is_file()
            else f"the job's process ended with status {code}"
        )
        raise ChildJobError(reason)
    return json.loads(metrics.read_text())


def end_child_ranks(trainer: L.Trainer, failed: bool) -> None:
    """On rank 0 of a `ddp` run: the ranks Lightning started as child processes end with this run. After a
    failure they would wait for this rank in their next collective (until the backend's timeout), so they are
    killed; after a success they are waited for (they only finish up), then killed if they do not end."""
    # Lightning's script launcher keeps its child processes (subprocess.Popen) in `procs`
    for proc in getattr(trainer.strategy.launcher, "procs", None) or []:
        if not failed:
            try:
                proc.wait(timeout=RANK_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning(
                    "rank process %d did not end %d s after the run: killing it", proc.pid, RANK_EXIT_SECONDS
                )
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def top_rows(board: Path, n: int = 10) -> str:
    """The leaderboard's table as leaderboard.md has it, its first `n` rows (best validation accuracy first)."""
    table = [line for line in board.read_text().splitlines() if line.startswith("|")]
    more = len(table) - 2 - n
    return "\n".join(table[: 2 + n] + ([f"({more} more rows in {board.name})"] if more > 0 else []))


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks` in conf/train.yaml): at the end of a multirun write the leaderboard,
    list the failed jobs, and exit non-zero if any failed (`fail_on_error`)."""

    def __init__(self, leaderboard: bool = True, fail_on_error: bool = True) -> None:
        self.leaderboard, self.fail_on_error = leaderboard, fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = [j for j in find_jobs(sweep_dir) if j.failed]
        if self.leaderboard:
            try:
                # a leaderboard bug must not hide failed jobs or the exit status
                summaries, _ = write_leaderboard(sweep_dir)
                board = sweep_dir / "leaderboard.md"
                log.info("leaderboard (%d configurations): %s\n%s", len(summaries), board, top_rows(board))
            except Exception as e:  # noqa: BLE001 (any error: report it and go on to the failures)
                log.error("could not write the leaderboard: %s: %s", type(e).__name__, e)
        if not failed:
            return
        lines = [
            f"  job {j.path.name}: {' '.join(f'{k}={v}' for k, v in j.overrides.items())}: {j.error}"
            for j in failed
        ]
        print(f"{len(failed)} failed job(s) in {sweep_dir}:\n" + "\n".join(lines), file=sys.stderr)
        if self.fail_on_error:
            # SystemExit, not an exception: Hydra's callback runner turns exceptions into warnings
            sys.exit(1)
