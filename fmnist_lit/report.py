"""The evaluation report: `report/` in a run folder, written after testing (by train.py and eval.py).

Inputs are what the LightningModule keeps after `trainer.test`: `test_outputs` (softmax probs, targets per
batch, in test-set order) and the DataModule's uint8 images. Figures come from `fmnist_lit.plots`.
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
from omegaconf import DictConfig
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
from fmnist_lit.data import CLASSES
from fmnist_lit.utils import to_jsonable, write_json

log = logging.getLogger(__name__)
TEST_EACH_EPOCH_LOSS = "test_each_epoch/loss"  # logged by callbacks.ReportCallback; never monitored


# ---- tables ----------------------------------------------------------------------------------------------

def classification_report(preds: torch.Tensor, target: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """preds, target: (N,) class indices. Per class precision/recall/F1/support, accuracy, macro and
    support-weighted averages (sklearn's layout), all from torchmetrics."""
    c = len(classes)
    scores = {avg: {"precision": multiclass_precision(preds, target, c, average=avg),
                    "recall": multiclass_recall(preds, target, c, average=avg),
                    "f1": multiclass_f1_score(preds, target, c, average=avg)} for avg in ("none", "macro", "weighted")}
    support = torch.bincount(target, minlength=c)
    rep: dict[str, Any] = {"classes": {
        name: {k: float(v[i]) for k, v in scores["none"].items()} | {"support": int(support[i])}
        for i, name in enumerate(classes)}}
    rep["accuracy"] = float(multiclass_accuracy(preds, target, c, average="micro"))
    for avg in ("macro", "weighted"):
        rep[f"{avg} avg"] = {k: float(v) for k, v in scores[avg].items()} | {"support": int(support.sum())}
    return rep


def report_markdown(rep: dict[str, Any]) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    row = "| {} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {support} |"
    lines += [row.format(name, **v) for name, v in rep["classes"].items()]
    n = rep["macro avg"]["support"]
    lines.append(f"| **accuracy** | | | {rep['accuracy']:.4f} | {n} |")
    lines += [row.format(f"**{k}**", **rep[k]) for k in ("macro avg", "weighted avg")]
    return "\n".join(lines) + "\n"


def layer_table(net: nn.Module) -> list[dict[str, Any]]:
    """One row per leaf layer in execution order: type, short arguments, output shape (C×H×W), parameters."""
    net = copy.deepcopy(getattr(net, "_orig_mod", net)).float().cpu().eval()  # a copy: hooks and BN untouched
    rows: list[dict[str, Any]] = []

    def hook(mod: nn.Module, _inp, out: torch.Tensor) -> None:
        rows.append({"name": names[mod], "type": type(mod).__name__, "args": _args(mod),
                     "out_shape": "×".join(map(str, out.shape[1:])), "params": sum(p.numel() for p in mod.parameters())})

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
    body = [f"{r['name']:<16} {r['type']:<18} {r['args']:<14} {r['out_shape']:<16} {r['params']:>10,}" for r in rows]
    return "\n".join([title, "input: 1×28×28 (normalised grayscale)", "", head, "-" * len(head), *body, "",
                      f"total parameters: {total:,}", f"trainable parameters: {trainable:,}"]) + "\n"


def read_history(csv_path: Path) -> dict[str, dict[int, float]]:
    """Lightning's csv/metrics.csv -> metric -> {epoch: last value logged in that epoch}."""
    hist: dict[str, dict[int, float]] = {}
    if not csv_path.is_file():
        return hist
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            for k, v in row.items():
                if k not in ("epoch", "step") and v not in ("", None):
                    hist.setdefault(k, {})[int(float(row["epoch"]))] = float(v)
    return hist


# ---- the report ------------------------------------------------------------------------------------------

def write_report(run_dir: str | Path, model: Any, datamodule: Any, metrics: dict[str, Any],
                 history_dir: str | Path | None = None) -> Path:
    """Write `<run_dir>/report/`. `history_dir`: the folder whose csv/metrics.csv holds the training curves
    (eval.py points it at the original run); default `run_dir`."""
    t0 = time.perf_counter()
    out = Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    probs = torch.cat([p for p, _ in model.test_outputs]).float()  # (N, C), test-set order
    target = torch.cat([y for _, y in model.test_outputs]).long()  # (N,)
    preds = probs.argmax(1)
    images = datamodule.test_x[: len(target)]  # uint8 (N, 28, 28): test loader does not shuffle
    figs: dict[str, str] = {}

    cm = multiclass_confusion_matrix(preds, target, len(CLASSES))
    plots.save(plots.confusion_matrix_figure(cm, CLASSES, "Confusion matrix, test set"), out / "confusion_matrix.png")
    _write_matrix_csv(cm, out / "confusion_matrix.csv")
    rep = classification_report(preds, target, CLASSES)
    write_json(out / "classification_report.json", rep)
    (out / "classification_report.md").write_text(report_markdown(rep))

    hist = read_history(Path(history_dir or run_dir) / "csv" / "metrics.csv")
    if hist.get("train/acc") or hist.get("val/acc"):
        plots.save(plots.curves_figure(hist), out / "curves.png")
        figs["curves"] = "curves.png"
    if hist.get(TEST_EACH_EPOCH_LOSS):
        plots.save(plots.val_test_loss_figure(hist.get("val/loss", {}), hist[TEST_EACH_EPOCH_LOSS]),
                   out / "val_test_loss.png")
        figs["val_test_loss"] = "val_test_loss.png"

    precision, recall, _ = multiclass_precision_recall_curve(probs, target, len(CLASSES))
    ap = multiclass_average_precision(probs, target, len(CLASSES), average=None)
    plots.save(plots.pr_curves_figure(list(zip(precision, recall)), ap, CLASSES), out / "pr_curves.png")
    _image_figures(out, datamodule, images, probs, target, seed=int(metrics.get("seed") or 0))

    net = getattr(model, "net", model)
    rows = layer_table(net)
    name = type(getattr(net, "_orig_mod", net)).__name__
    (out / "model_summary.txt").write_text(summary_text(rows, net, name))
    n_params = sum(p.numel() for p in net.parameters())
    plots.save(plots.architecture_figure(rows, f"{name} ({n_params:,} parameters)"), out / "architecture.png")

    (out / "report.md").write_text(report_page(metrics, rep, figs, float(ap.mean())))
    log.info("report written to %s in %.1f s", out, time.perf_counter() - t0)
    return out


def _write_matrix_csv(cm: torch.Tensor, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *CLASSES])
        w.writerows([name, *map(int, cm[i])] for i, name in enumerate(CLASSES))


def _image_figures(out: Path, dm: Any, images: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
                   seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dm.train_x), generator=g)[:32]
    plots.save(plots.image_grid(dm.train_x[idx], [CLASSES[int(dm.train_y[i])] for i in idx],
                                "Random training images"), out / "samples.png")
    conf, preds = probs.max(1)
    idx = torch.randperm(len(target), generator=g)[:32]
    wrong = preds[idx] != target[idx]
    plots.save(plots.image_grid(images[idx], [f"pred: {CLASSES[preds[i]]}\ntrue: {CLASSES[target[i]]}" for i in idx],
                                f"Random test images: predicted and true class (red = wrong, {int(wrong.sum())} of 32)",
                                [plots.WRONG if w else plots.RIGHT for w in wrong]), out / "predictions.png")
    bad = torch.nonzero(preds != target).flatten()
    bad = bad[conf[bad].argsort(descending=True)][:24]  # most confident mistakes first
    plots.save(plots.image_grid(images[bad], [f"true: {CLASSES[target[i]]}\npred: {CLASSES[preds[i]]}\n"
                                              f"confidence {float(conf[i]):.1%}" for i in bad],
                                f"Most confidently wrong test images ({len(bad)} of {int((preds != target).sum())} errors)",
                                [plots.WRONG] * len(bad), ncols=6), out / "misclassified.png")


def report_page(m: dict[str, Any], rep: dict[str, Any], figs: dict[str, str], mean_ap: float) -> str:
    """report.md: headline numbers, the command, every figure and table (relative links: renders anywhere)."""
    m = to_jsonable(m)  # tensors -> numbers
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and v >= 10_000 else str(v)

    head = [("test accuracy", m.get("test_acc")), ("test loss", m.get("test_loss")),
            ("macro F1", rep["macro avg"]["f1"]), ("mean average precision", mean_ap),
            ("best validation accuracy", m.get("val_acc_best")), ("best epoch (0-based)", m.get("best_epoch")),
            ("epochs run", m.get("epochs_run")), ("model", m.get("model")), ("parameters", m.get("params")),
            ("seed", m.get("seed")), ("precision", m.get("precision")), ("device", m.get("device")),
            ("wall time (s)", m.get("wall_seconds")), ("checkpoint tested", m.get("best_checkpoint"))]
    lines = [f"# Run report: {m.get('model', 'model')}, test accuracy {100 * float(m['test_acc']):.2f}%", "",
             (f"Official test set ({rep['macro avg']['support']} images); the checkpoint was chosen on "
              "validation accuracy."), "",
             "```bash", str(m.get("command", "")), "```", ""]
    if m.get("train_command"):
        lines += ["The checkpoint was trained by:", "", "```bash", m["train_command"], "```", ""]
    lines += ["| | |", "|---|---|", *[f"| {k} | {fmt(v)} |" for k, v in head if v is not None], ""]
    lines += ["## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", "",
              "As numbers: [confusion_matrix.csv](confusion_matrix.csv) (rows: true class).", "",
              "## Classification report", "", report_markdown(rep),
              ("Also as [classification_report.md](classification_report.md) and "
               "[classification_report.json](classification_report.json)."), ""]
    lines += ["## Training curves", ""] + ([f"![training curves]({figs['curves']})", ""] if "curves" in figs else
                                           ["Not available: the run has no csv/metrics.csv (CSV logger off).", ""])
    lines += ["## Validation and test loss per epoch", ""] + (
        [f"![validation and test loss]({figs['val_test_loss']})", "",
         "The test curve is for information only; it never selects the checkpoint or stops training.", ""]
        if "val_test_loss" in figs else ["Not recorded: train with `report.test_each_epoch=true` to get it.", ""])
    lines += ["## Precision-recall curves", "", "![PR curves](pr_curves.png)", "",
              "## Training images", "", "![samples](samples.png)", "",
              "## Predictions", "", "![predictions](predictions.png)", "",
              "## Most confident mistakes", "", "![misclassified](misclassified.png)", "",
              "## Model", "", "Layer table: [model_summary.txt](model_summary.txt)", "",
              "![architecture](architecture.png)", ""]
    return "\n".join(lines)


def maybe_write_report(cfg: DictConfig, run_dir: Path, model: Any, datamodule: Any, metrics: dict[str, Any],
                       history_dir: Path | None = None) -> None:
    """train.py's and eval.py's hook: the report unless `report.enabled=false`."""
    if (cfg.get("report") or {}).get("enabled", True):
        write_report(run_dir, model, datamodule, metrics, history_dir)


def load_metrics(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}
