"""report.md, the page of a run's report (fmnist_lit.report writes the files it links): headline numbers, how the
tested weights were chosen, the command, then every figure and table, with relative links so it renders anywhere.
Built from metrics.json alone (plus the classification report), so the wording is testable without a run.
"""

from __future__ import annotations

from typing import Any

from fmnist_lit.utils import to_jsonable


def report_markdown(rep: dict[str, Any]) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    row = "| {} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {support} |"
    lines += [row.format(name, **v) for name, v in rep["classes"].items()]
    n = rep["macro avg"]["support"]
    lines.append(f"| **accuracy** | | | {rep['accuracy']:.4f} | {n} |")
    lines += [row.format(f"**{k}**", **rep[k]) for k in ("macro avg", "weighted avg")]
    return "\n".join(lines) + "\n"


def tested_epoch(m: dict[str, Any]) -> int | None:
    """The epoch (from 1) whose weights were tested."""
    # eval.py: the checkpoint's own
    if m.get("epoch") is not None:
        return int(m["epoch"])
    return m.get("epochs_run") if m.get("checkpoint_selection") == "last" else m.get("best_epoch")


def selection_sentence(m: dict[str, Any]) -> str:
    """How the tested weights were chosen, in words (metrics.json's checkpoint_selection)."""
    how = m.get("checkpoint_selection")
    if how == "best val/acc":
        return (
            f"The tested checkpoint is the one with the best validation accuracy (epoch {m.get('best_epoch')}); "
            "the test set chose nothing."
        )
    if how == "last":
        why = (
            "eval.py was given last.ckpt"
            if m.get("source_run")
            else "the run had no validation split (data.val_size=0)"
            if m.get("val_acc_best") is None
            else "no checkpoint was selected on validation"
        )
        return f"The tested weights are the last ones (epoch {tested_epoch(m)}): {why}."
    return f"The tested weights are the checkpoint given to eval.py (epoch {tested_epoch(m)})."


def report_page(m: dict[str, Any], rep: dict[str, Any], figs: dict[str, str], mean_ap: float) -> str:
    """report.md: headline numbers, the command, every figure and table (relative links: renders anywhere)."""
    # tensors -> numbers
    m = to_jsonable(m)

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and v >= 10_000 else str(v)

    epochs = m.get("epochs_run")
    if epochs is not None and m.get("max_epochs") not in (None, -1, epochs):
        epochs = f"{epochs} of {m['max_epochs']} (stopped early)"
    wall = m.get("wall_seconds")
    c = m.get("calibration") or {}
    ece = f"{c['test_ece_before']:.4f} → {c['test_ece_after']:.4f}" if "test_ece_before" in c else None
    head = [
        ("test accuracy", m.get("test_acc")),
        ("test loss", m.get("test_loss")),
        ("test ECE, before → after temperature scaling", ece),
        ("temperature", c.get("temperature")),
        ("macro F1", rep["macro avg"]["f1"]),
        ("mean average precision", mean_ap),
        ("best validation accuracy", m.get("val_acc_best")),
        ("best validation epoch", m.get("best_epoch")),
        ("epoch of the tested weights", tested_epoch(m)),
        ("epochs run", epochs),
        ("model", m.get("model")),
        ("parameters", m.get("params")),
        ("seed", m.get("seed")),
        ("precision", m.get("precision")),
        ("device", m.get("device")),
        ("wall time (from process start, imports included)", None if wall is None else f"{wall:,.0f} s"),
        ("checkpoint tested", m.get("best_checkpoint")),
    ]
    n, total = rep["macro avg"]["support"], m.get("test_images_total")
    tested = (
        f"Part of the official test set: {n:,} of its {total:,} images (the trainer limited testing)."
        if total and n < total
        else f"Official test set ({n:,} images)."
    )
    lines = [
        f"# Run report: {m.get('model', 'model')}, test accuracy {100 * float(m['test_acc']):.2f}%",
        "",
        f"{tested} {selection_sentence(m)} Epochs count from 1.",
        "",
    ]
    if m.get("cut_short"):
        settings = " ".join(f"`trainer.{k}={v}`" for k, v in m["cut_short"].items())
        lines += [
            (
                f"**Cut short:** {settings}: the run saw only part of the data or steps of a full run, so these "
                "numbers are not comparable with full runs."
            ),
            "",
        ]
    lines += ["```bash", str(m.get("command", "")), "```", ""]
    if m.get("resumed_from"):
        lines += [
            (
                f"Resumed from `{m['resumed_from']}`: the curves before that point are in that run's folder "
                "(csv/metrics.csv, TensorBoard)."
            ),
            "",
        ]
    if m.get("train_command"):
        lines += ["The checkpoint was trained by:", "", "```bash", m["train_command"], "```", ""]
    lines += ["| | |", "|---|---|", *[f"| {k} | {fmt(v)} |" for k, v in head if v is not None], ""]
    lines += [
        "## Confusion matrix",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "As numbers: [confusion_matrix.csv](confusion_matrix.csv) (rows: true class).",
        "",
        "## Classification report",
        "",
        report_markdown(rep),
        (
            "Also as [classification_report.md](classification_report.md) and "
            "[classification_report.json](classification_report.json)."
        ),
        "",
    ]
    lines += calibration_section(m.get("calibration") or {}) + robustness_section(m.get("robustness"))
    lines += ["## Training curves", ""] + (
        [f"![training curves]({figs['curves']})", ""]
        if "curves" in figs
        else ["Not available: the run has no csv/metrics.csv (CSV logger off).", ""]
    )
    lines += ["## Validation and test loss per epoch", ""] + (
        [
            f"![validation and test loss]({figs['val_test_loss']})",
            "",
            "The test curve is for information only; it never selects the checkpoint or stops training.",
            "",
        ]
        if "val_test_loss" in figs
        else ["Not recorded: train with `report.test_each_epoch=true` to get it.", ""]
    )
    lines += [
        "## Precision-recall curves",
        "",
        "![PR curves](pr_curves.png)",
        "",
        "## Training images",
        "",
        "![samples](samples.png)",
        "",
        "## Predictions",
        "",
        "![predictions](predictions.png)",
        "",
        "## Most confident mistakes",
        "",
        "![misclassified](misclassified.png)",
        "",
        "## Model",
        "",
        "Layer table: [model_summary.txt](model_summary.txt)",
        "",
        "![architecture](architecture.png)",
        "",
    ]
    return "\n".join(lines)


def calibration_section(c: dict[str, Any]) -> list[str]:
    """report.md: temperature, test ECE and NLL before and after, the reliability diagram."""
    lines = ["## Calibration", ""]
    if not c.get("fitted_on"):
        lines += [
            (
                "No validation split (`data.val_size=0`): no temperature was fitted (T = 1), so the "
                "probabilities are the model's plain softmax."
            ),
            "",
        ]
    else:
        where = (
            f"fitted on the validation split ({c['val_images']:,} images; never the test set)"
            if c.get("val_images")
            else f"{c['fitted_on']}, fitted on the run's validation split"
        )
        lines += [
            (
                f"Temperature scaling: probabilities are softmax(logits / T) with "
                f"**T = {c['temperature']:.4f}**, {where}. Dividing all logits by one T keeps the predicted "
                "class, so the accuracy above is unchanged."
            ),
            "",
        ]
    if "test_ece_before" in c:
        ece = f"{c['test_ece_before']:.4f} | {c['test_ece_after']:.4f}"
        lines += [
            "| test set | before (T = 1) | after |",
            "|---|---:|---:|",
            f"| expected calibration error ({c.get('n_bins')} bins) | {ece} |",
            f"| negative log-likelihood | {c['test_nll_before']:.4f} | {c['test_nll_after']:.4f} |",
            "",
        ]
    return lines + ["![reliability diagram](reliability.png)", ""]


def robustness_section(r: dict[str, Any] | None) -> list[str]:
    """report.md: accuracy per corruption and severity (fmnist_lit.robustness), or how to get it."""
    lines = ["## Robustness", ""]
    if not r:
        return lines + ["Not computed: add `report.robustness=true` to train.py or eval.py.", ""]
    lines += [
        (
            f"Test accuracy on corrupted copies of the {r['images']:,} test images (clean: {r['clean']:.4f}); "
            f"seeded (seed {r['seed']}), the same images for every run. Took {r['seconds_corrupt']:.1f} s to "
            f"corrupt and {r['seconds_predict']:.1f} s to predict. Details: `docs/ROBUSTNESS.md`."
        ),
        "",
        "| corruption | severity 1 | severity 2 | severity 3 |",
        "|---|---:|---:|---:|",
    ]
    for name, by_level in r["accuracy"].items():
        levels = r["levels"][name]
        cells = [
            f"{by_level[str(s)]:.4f}" + (f" ({levels[s - 1]})" if levels[s - 1] is not None else "")
            if str(s) in by_level
            else ""
            for s in (1, 2, 3)
        ]
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "In brackets: the corruption's parameter (fmnist_lit/robustness.py).",
        "",
        "![robustness](robustness.png)",
        "",
    ]
