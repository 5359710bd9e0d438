"""Hydra entry point: compose the config, fit, test the best checkpoint on the official test set, write
`metrics.json` into the run folder (`outputs/<date>/<time>/`)."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import fmnist_lit
from fmnist_lit import tracking
from fmnist_lit.assess import assess, describe, write_results
from fmnist_lit.calibration import save_temperature
from fmnist_lit.checkpoint import check_resumable, read_checkpoint, run_dir_of
from fmnist_lit.cli import USER_ERRORS, fail, set_threads
from fmnist_lit.components import build, build_trainer, check_callbacks
from fmnist_lit.hardware import device_description
from fmnist_lit.sweep import (
    end_child_ranks,
    is_ddp_in_sweep,
    record_failure,
    records_failures,
    run_job_in_child_process,
    set_job_threads,
    sweeper_wants_exceptions,
)
from fmnist_lit.utils import UserError
from fmnist_lit.validate import check_train_config

log = logging.getLogger(__name__)
# metrics.json's wall_seconds: from process start, imports included
START = fmnist_lit.STARTED


def cut_short(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The trainer settings that make a run see less data or fewer steps than a full one (report.md warns)."""

    def active(k: str, v: Any) -> bool:
        # limits: 1.0 = all batches (an int 1 is one batch); overfit_batches 0, fast_dev_run false, max_steps -1: off
        if k.startswith("limit_"):
            return v is not None and not (isinstance(v, float) and v == 1.0)
        return v not in (None, False, 0, -1)

    keys = (
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "overfit_batches",
        "fast_dev_run",
        "max_steps",
    )
    return {k: trainer_cfg[k] for k in keys if active(k, trainer_cfg.get(k))}


# what a run makes in its folder that another run must never overwrite (checkpoints/ early, metrics.json last)
RUN_OUTPUTS = ("metrics.json", "checkpoints")


def check_run_folder(out: Path) -> None:
    for existing in RUN_OUTPUTS:
        if (out / existing).exists():
            raise UserError(f"{out / existing} already exists: choose a new hydra.run.dir")


def check_before_writing(cfg: DictConfig, out: Path) -> None:
    """Called by cli.CheckBeforeWriting before Hydra writes into the run folder."""
    check_run_folder(out)
    check_train_config(cfg, resolved=False)
    check_callbacks(cfg, out)
    tracking.check_config(cfg)
    model = build(cfg, "model")
    build(cfg, "data")
    if cfg.get("ckpt_path"):
        check_resumable(read_checkpoint(cfg.ckpt_path), model, cfg.ckpt_path, cfg.trainer.max_epochs)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit + test one configuration; returns the metrics written to metrics.json."""
    # where everything goes, said first (console and train.log), then what made it
    log.info(
        "run folder: %s (train.log, checkpoints/, tensorboard/, metrics.json, report/)", cfg.paths.output_dir
    )
    log.info("command: %s", " ".join(["python", *sys.argv]))
    # `trainer.precision=auto` typed on the command line: the same resolver as conf/trainer/default.yaml's
    if OmegaConf.select(cfg, "trainer.precision", throw_on_resolution_failure=False) == "auto":
        cfg.trainer.precision = "${auto_precision:${.accelerator}}"
    try:
        # precision=auto is decided here, once, and config.yaml records the outcome
        OmegaConf.resolve(cfg)
    # e.g. an interpolation typed on the command line that points nowhere
    except OmegaConfBaseException as e:
        raise UserError(" ".join(str(e).split())) from None
    check_train_config(cfg)
    # the resume checkpoint is read like eval.py's (weights only, one error line for anything else) before any work
    resume = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_folder(out)
    # seed 0 is a seed too
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    set_threads(cfg.get("threads"))

    datamodule: L.LightningDataModule = build(cfg, "data")
    model: L.LightningModule = build(cfg, "model")
    if resume is not None:
        check_resumable(resume, model, cfg.ckpt_path, cfg.trainer.max_epochs)
        log.info(
            "continues the run in %s from step %d (epoch %d): its curves up to that step are in that folder",
            run_dir_of(cfg.ckpt_path),
            resume["global_step"],
            resume["epoch"] + 1,
        )
        # Lightning reads it again (weights only, below) to restore every state
        del resume
    trainer = build_trainer(cfg)
    OmegaConf.save(cfg, out / "config.yaml")
    log.info("precision=%s device=%s", cfg.trainer.precision, device_description(cfg.trainer.accelerator))

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        best, selection = selected_checkpoint(trainer)
        # the tested weights are those of the best val/acc epoch, whose validation logits the module kept
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        val_logits = model.best_val_logits if best and monitor == "val/acc" else None
        # predict the test set, calibrate on validation, corruption sweep if asked: every DDP rank takes part
        result = assess(
            trainer,
            model,
            datamodule,
            ckpt_path=best,
            val_logits=val_logits,
            corruptions=bool((cfg.get("report") or {}).get("robustness")),
        )
        calibration = result.metrics["calibration"]
        if best and calibration["fitted_on"] and trainer.is_global_zero:
            save_temperature(best, calibration)
    except BaseException as e:
        # Lightning's Ctrl-C: stops cleanly, exits 1
        if isinstance(e, SystemExit) and trainer.interrupted:
            end_child_ranks(trainer, failed=True)
            raise KeyboardInterrupt from None
        err = e
        # a setting Lightning refuses once running (a monitor typo): one error line, like any bad setting
        if isinstance(e, MisconfigurationException):
            err = UserError(" ".join(str(e).split()))
            err.__cause__ = e
        # recorded before the other DDP ranks are killed: their death makes Lightning's watcher kill this rank
        if isinstance(err, Exception) and records_failures():
            record_failure(out, err)
        # DDP ranks > 0 would wait for this one in their next collective
        end_child_ranks(trainer, failed=True)
        if err is e:
            raise
        raise err from e
    end_child_ranks(trainer, failed=False)

    trained = model.best_val_epoch >= 0
    metrics = (
        result.metrics
        | {
            "val_acc_best": float(model.val_acc_best.compute()) if trained else None,
            # epochs count from 1, as people do
            "best_epoch": model.best_val_epoch + 1 if trained else None,
            "best_checkpoint": best,
            "checkpoint_selection": selection,
            "cut_short": cut_short(cfg.trainer),
            "max_epochs": cfg.trainer.max_epochs,
            "epochs_run": trainer.current_epoch,
            "global_steps": trainer.global_step,
            "wall_seconds": round(time.time() - START, 2),
            "resumed_from": str(Path(cfg.ckpt_path).resolve()) if cfg.get("ckpt_path") else None,
        }
        | describe(model, cfg.trainer.precision, cfg.trainer.accelerator, cfg.get("seed"))
    )
    if trainer.is_global_zero:
        report = bool((cfg.get("report") or {}).get("enabled", True))
        write_results(out, result, metrics, datamodule, model, report)
        tracking.publish_results(trainer.loggers, metrics, out)
    return metrics


def selected_checkpoint(trainer: L.Trainer) -> tuple[str | None, str]:
    """(the checkpoint to test, how it was chosen): the best on validation, else last.ckpt, else None (the
    weights in memory: no checkpoint was written, e.g. `trainer.fast_dev_run`)."""
    cb = trainer.checkpoint_callback
    if cb is not None and cb.best_model_path:
        return cb.best_model_path, "best val/acc"
    return (cb.last_model_path if cb is not None and cb.last_model_path else None), "last"


def interrupted(out: Path) -> None:
    """Ctrl-C: how to go on, said once (console and train.log). When last.ckpt exists, console.EpochLog has
    already given the resume command with its step and epoch."""
    if not (out / "checkpoints" / "last.ckpt").is_file():
        log.warning("interrupted by Ctrl-C: no checkpoint was written yet, nothing to resume")


def main(cfg: DictConfig) -> float | None:
    global START
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    # a DDP job of a sweep runs as a single run in a child process (sweep.run_job_in_child_process): it records
    # its own failure for the sweep's leaderboard
    record = records_failures()
    try:
        if multirun:
            # jobs share one process: each job's wall time starts at the job
            START = time.time()
            set_job_threads(cfg)
            metrics = run_job_in_child_process(cfg) if is_ddp_in_sweep(cfg) else run(cfg)
        else:
            metrics = run(cfg)
        # for hyper-parameter search: a metrics.json key (never a test metric)
        key = cfg.get("optimized_metric")
        value = metrics.get(key) if key else None
        if key and (value is None or not math.isfinite(value)):
            raise UserError(f"optimized_metric={key} is {value} (diverged, or no validation split?)")
    except KeyboardInterrupt:
        interrupted(Path(cfg.paths.output_dir))
        sys.exit(130)
    except Exception as e:
        # one failed job must not end the sweep: see fmnist_lit/sweep.py
        if record:
            record_failure(cfg.paths.output_dir, e)
        if multirun:
            if sweeper_wants_exceptions():
                raise
            return None
        if isinstance(e, USER_ERRORS):
            fail(str(e))
        raise
    return value
