"""Calibrated probabilities: temperature scaling (Guo et al. 2017) and the numbers that judge it.

After training, one scalar T > 0 is fitted on the VALIDATION split's logits by minimising the negative
log-likelihood of softmax(logits / T) (LBFGS on log T, so T stays positive); the test set never sees the fit.
Dividing every logit by the same T > 0 keeps their order, so the predicted class (argmax) and the accuracy are
unchanged: only the confidence moves. A run without a validation split (`data.val_size=0`) has T = 1.

T is stored beside the checkpoints in `checkpoints/calibration.json`, naming the checkpoint it was fitted for. Not
inside the .ckpt: T is fitted after ModelCheckpoint wrote it, and rewriting the file would change what training
left behind (and what a resume reads). eval.py, predict.py and export.py read it back (`stored_temperature`).

Judged on the test set before and after: expected calibration error (torchmetrics' multiclass_calibration_error,
the functional form of `MulticlassCalibrationError`: |accuracy - mean confidence| per confidence bin, weighted by
the bin's share of images) and the negative log-likelihood; the reliability diagram is drawn from `reliability`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from fmnist_lit.data import ImageSet

log = logging.getLogger(__name__)
# confidence bins for ECE and the reliability diagram (Guo et al.'s choice)
N_BINS = 15
# a validation split the model gets 100% right pushes T -> 0: bound the search
T_RANGE = (0.05, 20.0)
FILE = "calibration.json"


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """logits (N, C), target (N,) -> the T minimising cross_entropy(logits / T, target), within T_RANGE."""
    # float64: a smooth objective for LBFGS
    z, y = logits.detach().double().cpu(), target.long().cpu()
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.clamp(lo, hi).exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().clamp(lo, hi).exp())
    if not T_RANGE[0] < t < T_RANGE[1]:
        log.warning("temperature stopped at the end of its range %s: %.3g", T_RANGE, t)
    return t


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, C) logits -> (N, C) probabilities softmax(logits / T)."""
    return (logits.float() / temperature).softmax(-1)


def scores(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> dict[str, float]:
    """ECE and NLL of softmax(logits / T) against target."""
    probs = apply_temperature(logits, temperature)
    ece = multiclass_calibration_error(probs, target, probs.shape[1], n_bins=N_BINS, norm="l1")
    nll = F.cross_entropy(logits.double() / temperature, target.long())
    return {"ece": float(ece), "nll": float(nll)}


def reliability(probs: torch.Tensor, target: torch.Tensor, n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Per confidence bin [k/n, (k+1)/n), binned as torchmetrics does (except that a confidence of exactly 1
    joins the last bin; torchmetrics gives it one of its own): mean confidence, accuracy, number of images.
    Empty bins have NaN confidence and accuracy."""
    conf, pred = probs.float().max(1)
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).float()

    def mean(v: torch.Tensor) -> list[float]:
        # NaN where count = 0
        return (torch.bincount(idx, v, minlength=n_bins) / count).tolist()

    return {"confidence": mean(conf), "accuracy": mean((pred == target).float()), "count": count.tolist()}


def predict_logits(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """`trainer.predict` on (uint8 images x, labels y) instead of the test set -> (N, C) float32 logits.

    The run's own Trainer (its precision and device; under DDP every rank takes part, as in any `trainer.predict`:
    a second Trainer would set up collectives that the other ranks never join). The TensorBoardReport callback
    leaves these predictions out of TensorBoard's test-set figures (they come from an ImageSet)."""
    return torch.cat(trainer.predict(model, datamodule=ImageSet(datamodule, x, y))).float().cpu()


def calibrate(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: Any,
    test_logits: torch.Tensor,
    stored: float | None = None,
    val_logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """metrics.json's `calibration`: T (the `stored` one, else fitted on the validation split, else 1) and the
    test ECE/NLL before and after it. `val_logits`: the tested weights' logits (N_val, C) of the whole validation
    split, already computed (the fit's validation pass of the selected epoch); otherwise they are predicted."""
    out: dict[str, Any] = {"temperature": 1.0, "n_bins": N_BINS}
    if stored is not None:
        out |= {"temperature": stored, "fitted_on": f"stored with the run (checkpoints/{FILE})"}
    elif len(datamodule.val_x) == 0:
        # report.md says: no validation split, T = 1
        out["fitted_on"] = None
    else:
        if val_logits is None or len(val_logits) != len(datamodule.val_x):
            val_logits = predict_logits(trainer, model, datamodule, datamodule.val_x, datamodule.val_y)
        # all of it, unless the trainer limits predict batches
        val_y = datamodule.val_y[: len(val_logits)]
        t = fit_temperature(val_logits, val_y)
        before, after = scores(val_logits, val_y, 1.0), scores(val_logits, val_y, t)
        out |= {
            "temperature": t,
            "fitted_on": "validation split",
            "val_images": len(val_logits),
            "val_nll_before": before["nll"],
            "val_nll_after": after["nll"],
        }
        log.info(
            "temperature %.4f fitted on %d validation images (val NLL %.4f -> %.4f)",
            t,
            len(val_logits),
            before["nll"],
            after["nll"],
        )
    target = datamodule.test_y[: len(test_logits)]
    for when, t in (("before", 1.0), ("after", out["temperature"])):
        out |= {f"test_{k}_{when}": v for k, v in scores(test_logits, target, t).items()}
    return out


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 of a checkpoint's weights (names, dtypes and bytes): two checkpoints with the same digest hold the
    same weights, so a temperature fitted for one holds for the other (last.ckpt of a run whose best epoch was its
    last one, a copy of the best checkpoint)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if isinstance(t, torch.Tensor):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_temperature(ckpt_path: str | Path, calibration: dict[str, Any]) -> Path:
    """Write checkpoints/calibration.json for the checkpoint the run tested (only a fitted T is stored), with the
    digest of its weights."""
    path = Path(ckpt_path).parent / FILE
    keep = ("temperature", "fitted_on", "val_images", "val_nll_before", "val_nll_after")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    record = {"checkpoint": Path(ckpt_path).name, "weights_sha256": weights_digest(state)}
    path.write_text(json.dumps(record | {k: calibration.get(k) for k in keep}, indent=2) + "\n")
    return path


def stored_temperature(ckpt_path: str | Path, state_dict: dict[str, Any] | None = None) -> float | None:
    """T from calibration.json beside `ckpt_path` if it was fitted for that checkpoint, or for the same weights
    (`state_dict`, the checkpoint's, compared by digest); else None, saying why when the run has a T."""
    path = Path(ckpt_path).parent / FILE
    try:
        data = json.loads(path.read_text())
        name, t = data["checkpoint"], float(data["temperature"])
    # absent or not ours: no stored temperature
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not T_RANGE[0] <= t <= T_RANGE[1]:
        return None
    if name == Path(ckpt_path).name:
        return t
    if state_dict is not None and data.get("weights_sha256") == weights_digest(state_dict):
        log.info(
            "%s holds the same weights as %s: its temperature T = %.4f applies", Path(ckpt_path).name, name, t
        )
        return t
    log.warning(
        "%s: the run's temperature (T = %.4f) was fitted for %s, which holds other weights; probabilities for %s "
        "are uncalibrated (T = 1): use %s for calibrated ones",
        Path(ckpt_path).name,
        t,
        name,
        Path(ckpt_path).name,
        name,
    )
    return None
