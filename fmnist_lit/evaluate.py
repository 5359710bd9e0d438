"""eval.py: test any checkpoint of this project on the official test set and write the same metrics.json and
report/ as train.py, into its own new run folder (the evaluated run is never written to).

The checkpoint and its run's config are read by fmnist_lit.checkpoint (weights only, allowed targets only). The
precision is the one the run recorded in its config.yaml, so the test accuracy is reproduced exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from fmnist_lit.assess import assess, describe, write_results
from fmnist_lit.calibration import stored_temperature
from fmnist_lit.checkpoint import build_from_run, load_model, locate, read_checkpoint, run_config, run_dir_of
from fmnist_lit.cli import exit_on_user_error, set_threads
from fmnist_lit.console import ProgressBar
from fmnist_lit.report import load_metrics
from fmnist_lit.utils import UserError
from fmnist_lit.validate import check_eval_config

log = logging.getLogger(__name__)


def check_output_dir(ckpt_path: str | Path, out: Path) -> None:
    """The evaluated run is never written to, nor an earlier evaluation."""
    out, src = out.resolve(), run_dir_of(ckpt_path)
    if (src / "config.yaml").is_file() and (out == src or src in out.parents):
        raise UserError(f"hydra.run.dir={out} is inside the evaluated run {src}: choose another folder")
    if (out / "metrics.json").exists():
        raise UserError(f"{out / 'metrics.json'} already exists: choose a new hydra.run.dir")


def check_before_writing(cfg: DictConfig, out: Path) -> None:
    """Called by cli.CheckBeforeWriting before Hydra writes into the output folder: a checkpoint that is not one
    of ours, or whose run names a class the user does not trust, is refused with nothing written."""
    check_eval_config(cfg)
    ckpt_path = locate(cfg.ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    run_cfg = run_config(ckpt_path)[1]
    # a run the code can no longer build is refused here too (building reads no data)
    load_model(run_cfg, ckpt, ckpt_path)
    build_from_run(run_cfg, "data", ckpt_path)
    check_output_dir(ckpt_path, out)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    check_eval_config(cfg)
    # a run folder stands for the checkpoint its run tested
    ckpt_path = locate(cfg.ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    src, run_cfg = run_config(ckpt_path)
    out = Path(cfg.paths.output_dir).resolve()
    check_output_dir(ckpt_path, out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.get("threads"))
    model = load_model(run_cfg, ckpt, ckpt_path)
    dm = build_from_run(
        run_cfg, "data", ckpt_path, **({"root": cfg.data.root} if cfg.data.get("root") else {})
    )
    # the precision the run decided and recorded in its config.yaml: the test accuracy is reproduced exactly
    precision = str(run_cfg.trainer.precision)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        # drawn only on a terminal, as train.py's
        callbacks=[ProgressBar()],
        limit_test_batches=cfg.get("limit_test_batches"),
        default_root_dir=str(out),
    )
    # the temperature stored with the run for this checkpoint; else fitted here on the run's validation split
    result = assess(
        trainer,
        model,
        dm,
        temperature=stored_temperature(ckpt_path, ckpt["state_dict"]),
        corruptions=bool((cfg.get("report") or {}).get("robustness")),
    )
    trained = load_metrics(src)
    metrics = (
        result.metrics
        | {
            "best_checkpoint": str(ckpt_path.resolve()),
            "source_run": str(src),
            # the weights' epoch, counted from 1
            "epoch": ckpt["epoch"] + 1 if isinstance(ckpt.get("epoch"), int) else None,
            "best_epoch": trained.get("best_epoch"),
            "val_acc_best": trained.get("val_acc_best"),
            "epochs_run": trained.get("epochs_run"),
            "max_epochs": trained.get("max_epochs"),
            "checkpoint_selection": _selection(ckpt_path, trained),
            "cut_short": trained.get("cut_short"),
            "train_command": trained.get("command"),
        }
        | describe(model, precision, cfg.accelerator, run_cfg.get("seed"))
    )
    # the evaluated run's config, for the record
    OmegaConf.save(run_cfg, out / "config.yaml")
    report = bool((cfg.get("report") or {}).get("enabled", True))
    write_results(out, result, metrics, dm, model, report, history_dir=src)
    return metrics


def _selection(ckpt_path: Path, trained: dict[str, Any]) -> str:
    """How the evaluated weights were chosen, for report.md: "last", "best val/acc" or "given"."""
    if ckpt_path.name == "last.ckpt":
        return "last"
    best = trained.get("best_checkpoint")
    if best and Path(best).name == ckpt_path.name and trained.get("checkpoint_selection") != "last":
        return "best val/acc"
    return "given"


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
