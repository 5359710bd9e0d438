"""What happens to a model once it is trained, the one path train.py and eval.py share: predict the test set ->
its metrics, also sent to the run's loggers -> calibrate -> (corruption sweep) -> metrics.json -> report/.

The test set is passed once: the numbers in metrics.json, the loggers' `test/*` scalars and the report all come
from one source, its logits from `trainer.predict`, so they describe the same images (one pass matters: a model
with multi-view TTA pays several forward passes per image). A trainer that tests part of the test set
(`trainer.limit_test_batches`, `fast_dev_run`) predicts that same part: metrics.json's `test_images` says how many
of the 10,000 were tested.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
)

from fmnist_lit import robustness
from fmnist_lit.calibration import calibrate
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.hardware import device_description
from fmnist_lit.models import count_params, plain_net
from fmnist_lit.report import classification_report, write_report
from fmnist_lit.utils import write_json

log = logging.getLogger(__name__)


@dataclass
class Assessment:
    """The test set's predictions and what metrics.json says about them."""

    # (N, 10) float32 logits of the tested images, in test-set order (N = 10,000 unless the trainer limits it)
    logits: torch.Tensor
    # (N,) their labels
    target: torch.Tensor
    metrics: dict[str, Any]


def test_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """metrics.json's test numbers from the logits (N, C) of the tested images and their labels (N,)."""
    preds = logits.argmax(1)
    rep = classification_report(preds, target, CLASSES)
    class_acc = multiclass_accuracy(preds, target, len(CLASSES), average="none")
    return {
        "test_acc": rep["accuracy"],
        "test_loss": float(F.cross_entropy(logits.double(), target.long())),
        "test_precision_macro": rep["macro avg"]["precision"],
        "test_recall_macro": rep["macro avg"]["recall"],
        "test_f1_macro": rep["macro avg"]["f1"],
        "test_images": len(target),
        "per_class": {
            name: {k: rep["classes"][name][k] for k in ("precision", "recall", "f1")}
            | {"acc": float(class_acc[i])}
            for i, name in enumerate(CLASSES)
        },
        # rows: true class, columns: predicted class
        "confusion_matrix": multiclass_confusion_matrix(preds, target, len(CLASSES)).tolist(),
    }


def predict_test_set(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, ckpt_path: str | None
) -> torch.Tensor:
    """(N, 10) logits of `ckpt_path`'s weights (None: the model's own) on the test set, whole on every DDP rank;
    the trainer's test limit applies."""
    full = trainer.limit_predict_batches
    trainer.limit_predict_batches = trainer.limit_test_batches
    try:
        batches = trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        return torch.cat(batches).float().cpu()
    finally:
        trainer.limit_predict_batches = full


def log_test_metrics(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """The test numbers as the loggers' `test/*` scalars (TensorBoard's HParams columns, MLflow, W&B), at the
    last training step; the loggers were finalised by the predict pass, so they are finalised again (flushed)."""
    if not trainer.is_global_zero:
        return
    scalars = {
        "test/acc": metrics["test_acc"],
        "test/loss": metrics["test_loss"],
        "test/precision": metrics["test_precision_macro"],
        "test/recall": metrics["test_recall_macro"],
        "test/f1": metrics["test_f1_macro"],
        # as Lightning adds to what a module logs: after training, the number of epochs run
        "epoch": trainer.current_epoch,
    }
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=trainer.global_step)
        logger.finalize("success")


def assess(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: Any,
    *,
    ckpt_path: str | None = None,
    temperature: float | None = None,
    val_logits: torch.Tensor | None = None,
    corruptions: bool = False,
) -> Assessment:
    """Predict the test set with `ckpt_path`'s weights (None: the model's own), calibrate (with the stored
    `temperature`, else fitted on the validation split: on `val_logits` when given, see calibration.calibrate) and,
    if asked, measure accuracy under corruptions. Every DDP rank takes part; the metrics are the same on each."""
    logits = predict_test_set(trainer, model, datamodule, ckpt_path)
    target = datamodule.test_y[: len(logits)].long()
    metrics = test_metrics(logits, target) | {"test_images_total": len(datamodule.test_y)}
    log_test_metrics(trainer, metrics)
    if len(target) < len(datamodule.test_y):
        log.warning(
            "tested %d of the %d test images (the trainer limits testing)",
            len(target),
            len(datamodule.test_y),
        )
    metrics["calibration"] = calibrate(trainer, model, datamodule, logits, temperature, val_logits)
    if corruptions:
        metrics["robustness"] = robustness.evaluate_corruptions(trainer, model, datamodule)
    return Assessment(logits, target, metrics)


def describe(model: L.LightningModule, precision: str, accelerator: str, seed: int | None) -> dict[str, Any]:
    """metrics.json's record of what was tested, where and by which command."""
    return {
        "model": type(plain_net(model.net)).__name__,
        "params": count_params(model.net),
        "seed": seed,
        "precision": precision,
        "device": device_description(accelerator),
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "lightning": L.__version__,
            "python": sys.version.split()[0],
        },
        "command": " ".join(["python", *sys.argv]),
    }


def write_results(
    out: Path,
    result: Assessment,
    metrics: dict[str, Any],
    datamodule: Any,
    model: L.LightningModule,
    report: bool,
    history_dir: Path | None = None,
) -> None:
    """metrics.json and (if `report`) report/ in the run folder `out`."""
    write_json(out / "metrics.json", metrics)
    if report:
        write_report(out, result.logits, result.target, datamodule, model.net, metrics, history_dir)
    log.info("test/acc=%.4f test/loss=%.4f -> %s", metrics["test_acc"], metrics["test_loss"], out)
