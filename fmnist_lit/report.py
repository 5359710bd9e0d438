"""The evaluation report: `report/` in a run folder, written after testing (by train.py and eval.py).

Inputs: the test set's logits from `trainer.predict` (test-set order), its labels and uint8 images from the
DataModule, the net, and metrics.json (built by fmnist_lit.assess for train.py and eval.py alike), whose
`calibration` gives the temperature (probabilities are softmax(logits / T), fmnist_lit.calibration) and whose
optional `robustness` gives the corruption sweep (fmnist_lit.robustness). Figures come from `fmnist_lit.plots`,
the page that links them (report.md) from `fmnist_lit.report_page`.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_average_precision,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_precision_recall_curve,
    multiclass_recall,
)

from fmnist_lit import plots
from fmnist_lit.calibration import apply_temperature, reliability
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.models import count_params, plain_net
from fmnist_lit.report_page import report_markdown, report_page, tested_epoch
from fmnist_lit.utils import write_json

log = logging.getLogger(__name__)
# logged by LitClassifier with report.test_each_epoch; never monitored
TEST_EACH_EPOCH_LOSS = "test_each_epoch/loss"


# ---- tables ----------------------------------------------------------------------------------------------


def classification_report(preds: torch.Tensor, target: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """preds, target: (N,) class indices. Per class precision/recall/F1/support, accuracy, macro and
    support-weighted averages (sklearn's layout), all from torchmetrics."""
    c = len(classes)
    scores = {
        avg: {
            "precision": multiclass_precision(preds, target, c, average=avg),
            "recall": multiclass_recall(preds, target, c, average=avg),
            "f1": multiclass_f1_score(preds, target, c, average=avg),
        }
        for avg in ("none", "macro", "weighted")
    }
    support = torch.bincount(target, minlength=c)
    rep: dict[str, Any] = {
        "classes": {
            name: {k: float(v[i]) for k, v in scores["none"].items()} | {"support": int(support[i])}
            for i, name in enumerate(classes)
        }
    }
    rep["accuracy"] = float(multiclass_accuracy(preds, target, c, average="micro"))
    for avg in ("macro", "weighted"):
        rep[f"{avg} avg"] = {k: float(v) for k, v in scores[avg].items()} | {"support": int(support.sum())}
    return rep


def layer_table(net: nn.Module) -> list[dict[str, Any]]:
    """One row per leaf layer in execution order: type, short arguments, output shape (C×H×W), parameters."""
    # a copy: hooks and BatchNorm statistics of the trained net untouched
    net = copy.deepcopy(plain_net(net)).float().cpu().eval()
    rows: list[dict[str, Any]] = []

    def hook(mod: nn.Module, _inp, out: torch.Tensor) -> None:
        rows.append(
            {
                "name": names[mod],
                "type": type(mod).__name__,
                "args": _args(mod),
                "out_shape": "×".join(map(str, out.shape[1:])),
                "params": sum(p.numel() for p in mod.parameters()),
            }
        )

    names = {m: n for n, m in net.named_modules() if not list(m.children())}
    handles = [m.register_forward_hook(hook) for m in names]
    with torch.no_grad():
        net(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return rows


def _args(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return f"{m.in_channels}→{m.out_channels}, {m.kernel_size[0]}×{m.kernel_size[1]}"
    if isinstance(m, nn.Linear):
        return f"{m.in_features}→{m.out_features}"
    if isinstance(m, nn.BatchNorm2d):
        return str(m.num_features)
    if isinstance(m, nn.MaxPool2d):
        return f"{m.kernel_size}"
    if isinstance(m, nn.Dropout):
        return f"p={m.p}"
    return ""


def summary_text(rows: list[dict[str, Any]], net: nn.Module, title: str) -> str:
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    head = f"{'layer':<16} {'type':<18} {'arguments':<14} {'output (C×H×W)':<16} {'params':>10}"
    body = [
        f"{r['name']:<16} {r['type']:<18} {r['args']:<14} {r['out_shape']:<16} {r['params']:>10,}"
        for r in rows
    ]
    return (
        "\n".join(
            [
                title,
                "input: 1×28×28 (normalised grayscale)",
                "",
                head,
                "-" * len(head),
                *body,
                "",
                f"total parameters: {total:,}",
                f"trainable parameters: {trainable:,}",
            ]
        )
        + "\n"
    )


def _per_step(key: str) -> bool:
    # LearningRateMonitor's; the module's train/loss_step
    return key.startswith("lr-") or key.endswith("_step")


def read_history(csv_path: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[float, float]]]:
    """csv/metrics.csv -> (per epoch: metric -> {epoch from 1: last value logged in that epoch},
    per step: metric -> {fractional epoch: value} for the learning rate and the per-step loss). Step s (from 0) is
    at epoch (s + 1) / steps per epoch, so the end of epoch k is at k, where its per-epoch values are drawn. The
    file counts epochs from 1 (fmnist_lit.loggers.CSVLogger)."""
    epochs: dict[str, dict[int, float]] = {}
    steps: dict[str, dict[int, float]] = {}
    steps_per_epoch = None
    if not csv_path.is_file():
        return epochs, {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(float(row["epoch"])) if row.get("epoch") else None
            step = int(float(row["step"])) if row.get("step") else None
            for k, v in row.items():
                if k in ("epoch", "step") or v in ("", None):
                    continue
                if _per_step(k):
                    if step is not None:
                        steps.setdefault(k, {})[step] = float(v)
                elif epoch is not None:
                    epochs.setdefault(k, {})[epoch] = float(v)
                    if steps_per_epoch is None and step is not None and k in ("train/acc", "val/acc"):
                        # logged at the epoch's last step
                        steps_per_epoch = (step + 1) / epoch
    spe = steps_per_epoch or 1.0
    return epochs, {k: {(s + 1) / spe: v for s, v in h.items()} for k, h in steps.items()}


# ---- the report ------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path,
    logits: torch.Tensor,
    target: torch.Tensor,
    datamodule: Any,
    net: nn.Module,
    metrics: dict[str, Any],
    history_dir: str | Path | None = None,
) -> Path:
    """Write `<run_dir>/report/` from the test predictions (logits (N, C) in test-set order, target (N,)).
    `history_dir`: the folder whose csv/metrics.csv holds the training curves (eval.py points it at the original
    run); default `run_dir`."""
    t0 = time.perf_counter()
    out = Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    calib = metrics.get("calibration") or {}
    temperature = float(calib.get("temperature", 1.0))
    # calibrated: what predict.py shows
    probs, target = apply_temperature(logits, temperature), target.long()
    preds = probs.argmax(1)
    # uint8 (N, 28, 28): test loader does not shuffle
    images = datamodule.test_x[: len(target)]
    figs: dict[str, str] = {}

    cm = multiclass_confusion_matrix(preds, target, len(CLASSES))
    plots.save(
        plots.confusion_matrix_figure(cm, CLASSES, "Confusion matrix, test set"), out / "confusion_matrix.png"
    )
    _write_matrix_csv(cm, out / "confusion_matrix.csv")
    rep = classification_report(preds, target, CLASSES)
    write_json(out / "classification_report.json", rep)
    (out / "classification_report.md").write_text(report_markdown(rep))

    history = Path(history_dir or run_dir)
    hist, steps = read_history(history / "csv" / "metrics.csv")
    if hist.get("train/acc") or hist.get("val/acc"):
        selected = tested_epoch(metrics)
        label = (
            "tested: best val acc"
            if metrics.get("checkpoint_selection") == "best val/acc"
            else "tested weights"
        )
        plots.save(plots.curves_figure(hist, steps, selected, label), out / "curves.png")
        figs["curves"] = "curves.png"
    if hist.get(TEST_EACH_EPOCH_LOSS):
        plots.save(
            plots.val_test_loss_figure(hist.get("val/loss", {}), hist[TEST_EACH_EPOCH_LOSS]),
            out / "val_test_loss.png",
        )
        figs["val_test_loss"] = "val_test_loss.png"

    precision, recall, _ = multiclass_precision_recall_curve(probs, target, len(CLASSES))
    ap = multiclass_average_precision(probs, target, len(CLASSES), average=None)
    plots.save(plots.pr_curves_figure(list(zip(precision, recall)), ap, CLASSES), out / "pr_curves.png")
    _image_figures(out, datamodule, images, probs, target, int(metrics.get("seed") or 0), calib)
    panels = [("Before: softmax(logits)", reliability(apply_temperature(logits, 1.0), target))]
    if calib.get("fitted_on"):
        panels.append((f"After temperature scaling (T = {temperature:.3f})", reliability(probs, target)))
    plots.save(plots.reliability_figure(panels), out / "reliability.png")
    if metrics.get("robustness"):
        rob = metrics["robustness"]
        plots.save(plots.robustness_figure(rob["clean"], rob["accuracy"]), out / "robustness.png")

    rows = layer_table(net)
    name = type(plain_net(net)).__name__
    (out / "model_summary.txt").write_text(summary_text(rows, net, name))
    n_params = count_params(net)
    plots.save(plots.architecture_figure(rows, f"{name} ({n_params:,} parameters)"), out / "architecture.png")

    (out / "report.md").write_text(report_page(metrics, rep, figs, float(ap.mean())))
    log.info("report written to %s in %.1f s", out, time.perf_counter() - t0)
    return out


def _write_matrix_csv(cm: torch.Tensor, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *CLASSES])
        w.writerows([name, *map(int, cm[i])] for i, name in enumerate(CLASSES))


def _image_figures(
    out: Path,
    dm: Any,
    images: torch.Tensor,
    probs: torch.Tensor,
    target: torch.Tensor,
    seed: int,
    calib: dict[str, Any],
) -> None:
    """samples.png, predictions.png and misclassified.png; `probs` are softmax(logits / T) with the temperature
    of `calib` (metrics.json's calibration), which misclassified.png names."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dm.train_x), generator=g)[:32]
    plots.save(
        plots.image_grid(
            dm.train_x[idx], [CLASSES[int(dm.train_y[i])] for i in idx], "Random training images"
        ),
        out / "samples.png",
    )
    conf, preds = probs.max(1)
    idx = torch.randperm(len(target), generator=g)[:32]
    wrong = preds[idx] != target[idx]
    plots.save(
        plots.image_grid(
            images[idx],
            [f"true: {CLASSES[target[i]]}\npred: {CLASSES[preds[i]]}" for i in idx],
            f"Random test images: true and predicted class (red = wrong, {int(wrong.sum())} of 32)",
            [plots.WRONG if w else plots.RIGHT for w in wrong],
        ),
        out / "predictions.png",
    )
    bad = torch.nonzero(preds != target).flatten()
    # most confident mistakes first
    bad = bad[conf[bad].argsort(descending=True)][:24]
    plots.save(
        plots.image_grid(
            images[bad],
            [
                f"true: {CLASSES[target[i]]}\npred: {CLASSES[preds[i]]}\nconfidence {float(conf[i]):.1%}"
                for i in bad
            ],
            (
                f"Most confidently wrong test images ({len(bad)} of {int((preds != target).sum())} errors): "
                f"true and predicted class, {_confidence(calib)}"
            ),
            [plots.WRONG] * len(bad),
            ncols=6,
        ),
        out / "misclassified.png",
    )


def _confidence(calib: dict[str, Any]) -> str:
    """What a shown confidence is: calibrated (softmax at the fitted temperature T) or the plain softmax."""
    if calib.get("fitted_on"):
        return f"confidence calibrated with T = {float(calib['temperature']):.2f}"
    return "confidence (not calibrated: T = 1)"


def load_metrics(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}
