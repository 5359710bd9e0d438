"""Hydra entry point: compose the config, fit, test the best checkpoint on the official test set, write
`metrics.json` into the run folder (`outputs/<date>/<time>/`)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fmnist_lit.csv_data import CSVFormatError
from fmnist_lit.data import CLASSES, DatasetError
from fmnist_lit.report import maybe_write_report
from fmnist_lit.sweep import (
    ddp_relaunch_as_single_run,
    record_failure,
    set_job_threads,
    sweeper_wants_exceptions,
)
from fmnist_lit.utils import UserError, device_description, resolve_precision, validate_config, write_json

log = logging.getLogger(__name__)
# mistakes in the user's input: reported as one `error:` line (exit 2), never a traceback
USER_ERRORS = (UserError, DatasetError, CSVFormatError, MissingMandatoryValue)
# the repo's conf/ (an absolute path: Hydra would otherwise look for a `conf` module inside the package)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
START = time.time()  # wall clock from process start (imports included), for metrics.json


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    cbs = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None:  # a callback switched off with `callbacks.<name>=null`
            continue
        if name == "model_checkpoint" and cfg.data.val_size == 0:
            # nothing to select on: keep only last.ckpt, and test the final weights
            cb_cfg = OmegaConf.merge(cb_cfg, {"monitor": None, "save_top_k": 0})
        cbs.append(instantiate(cb_cfg))
    return cbs


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def set_threads(threads: int | None) -> None:
    # default: every core; parallel sweeps pass threads so that jobs x threads <= cores
    torch.set_num_threads(threads or os.cpu_count() or 1)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit + test one configuration; returns the metrics written to metrics.json."""
    validate_config(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for existing in ("metrics.json", "checkpoints"):
        if (out / existing).exists():  # never overwrite what an earlier run made
            raise UserError(f"{out / existing} already exists: choose a new hydra.run.dir")
    if cfg.get("seed") is not None:  # seed 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)
    set_threads(cfg.get("threads"))

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg),
                                     precision=precision)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    log.info("precision=%s device=%s", precision, device_description(cfg.trainer.accelerator))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise UserError("training was interrupted; last.ckpt (if any) is in the run folder: resume with ckpt_path=")
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    if best is None and ckpt_cb is not None and ckpt_cb.last_model_path:
        best = ckpt_cb.last_model_path
    trainer.test(model, datamodule=datamodule, ckpt_path=best)

    res = model.test_results
    metrics = {
        "test_acc": res["test/acc"], "test_loss": res["test/loss"],
        "test_precision_macro": res["test/precision"], "test_recall_macro": res["test/recall"],
        "test_f1_macro": res["test/f1"],
        "per_class": {name: {"precision": res["test/class_precision"][i], "recall": res["test/class_recall"][i],
                             "f1": res["test/class_f1"][i], "acc": res["test/class_acc"][i]}
                      for i, name in enumerate(CLASSES)},
        "confusion_matrix": res["confmat"],  # rows: true class, columns: predicted class
        "val_acc_best": float(model.val_acc_best.compute()) if model.best_val_epoch >= 0 else None,
        "best_epoch": model.best_val_epoch if model.best_val_epoch >= 0 else None,
        "best_checkpoint": best,
        "epochs_run": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "wall_seconds": round(time.time() - START, 2),
        "params": sum(p.numel() for p in model.net.parameters()),
        "model": cfg.model.net._target_.rsplit(".", 1)[-1],
        "seed": cfg.get("seed"),
        "precision": precision,
        "device": device_description(cfg.trainer.accelerator),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "python": sys.version.split()[0]},
        "command": " ".join(["python", *sys.argv]),
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
        maybe_write_report(cfg, out, model, datamodule, metrics)  # report/: figures, tables, report.md
        log.info("test/acc=%.4f test/loss=%.4f -> %s", metrics["test_acc"], metrics["test_loss"], out)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    global START
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if multirun:
            START = time.time()  # jobs share one process: each job's wall time starts at the job
            set_job_threads(cfg)
            with ddp_relaunch_as_single_run(cfg):
                metrics = run(cfg)
        else:
            metrics = run(cfg)
        key = cfg.get("optimized_metric")  # for hyper-parameter search: a metrics.json key (never a test metric)
        value = metrics.get(key) if key else None
        if key and (value is None or not math.isfinite(value)):
            raise UserError(f"optimized_metric={key} is {value} (diverged, or no validation split?)")
    except Exception as e:
        if multirun:  # one failed job must not end the sweep: see fmnist_lit/sweep.py
            record_failure(cfg.paths.output_dir, e)
            if sweeper_wants_exceptions():
                raise
            return None
        if isinstance(e, USER_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    return value


if __name__ == "__main__":
    main()
