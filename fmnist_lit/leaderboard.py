"""Aggregate a Hydra sweep folder into leaderboard.md / .csv / .png.

A job is a sub-folder holding `.hydra/overrides.yaml` (Hydra writes it before the job starts). A job that has no
`metrics.json` failed (or is still running, or was killed): it is listed as failed, never silently dropped. An
Optuna trial stopped early by the pruner (fmnist_lit/optuna_pruning.py) is listed as pruned: not a failure.
One row per distinct configuration = the job's overrides minus `seed`; overrides shared by every job are shown
once above the table instead of in every row. Rows are ranked by mean best validation accuracy, the metric a sweep
chooses on; test accuracy is reported beside it, never used to order.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# what a row averages over
IGNORED_KEYS = {"seed"}
# error.txt of a pruned trial starts with the name of the exception Optuna's pruning raises
PRUNED = "TrialPruned"
# CSV columns besides the swept keys (present even when every job failed)
CSV_FIELDS = [
    "config",
    "n",
    "val_acc_best_mean",
    "val_acc_best_std",
    "test_acc_mean",
    "test_acc_std",
    "params",
    "epochs",
    "wall_seconds_mean",
    "seeds",
    "failed",
    "pruned",
]


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    # first line of error.txt, when the job wrote one
    error: str | None = None

    @property
    def pruned(self) -> bool:
        return self.metrics is None and (self.error or "").startswith(PRUNED)

    @property
    def failed(self) -> bool:
        return self.metrics is None and not self.pruned


@dataclass
class Row:
    config: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [j.metrics[key] for j in self.jobs if j.metrics.get(key) is not None]


def _key(override: str) -> tuple[str, str]:
    k, _, v = override.partition("=")
    # a deleted key (Hydra records `~key` as `~key=null`): not the same as `key=null`
    if k.startswith("~"):
        return k, ""
    return k.lstrip("+"), v


def _arg(k: str, v: str) -> str:
    """The override as typed: `key=value`, or `~key` for a deleted key."""
    return k if k.startswith("~") else f"{k}={v}"


def read_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(metrics, None) for a usable metrics.json; (None, why) for one that is truncated, not JSON, has no finite
    test accuracy or a non-numeric validation accuracy; (None, None) when there is none."""
    if not path.is_file():
        return None, None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__}: truncated or not JSON)"
    acc = m.get("test_acc") if isinstance(m, dict) else None
    if not isinstance(acc, (int, float)) or not math.isfinite(acc):
        return None, f"{path.name} has no test accuracy (test_acc={acc}: diverged?)"
    # null when the run had no validation; the rows are ranked on it
    val = m.get("val_acc_best")
    if val is not None and not isinstance(val, (int, float)):
        return None, f"{path.name} has a val_acc_best that is not a number ({val!r}: edited by hand?)"
    return m, None


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under `sweep_dir`, in job-number order (sub-folders named 0, 1, ..., 10 sort as numbers)."""
    jobs = []
    for ov in Path(sweep_dir).glob("**/.hydra/overrides.yaml"):
        d = ov.parent.parent
        overrides = dict(_key(o) for o in OmegaConf.to_container(OmegaConf.load(ov)))
        metrics, bad_metrics = read_metrics(d / "metrics.json")
        err = d / "error.txt"
        error = (
            err.read_text().strip().splitlines()[0] if err.is_file() and err.stat().st_size else bad_metrics
        )
        if metrics is None and error is None:
            error = "no metrics.json (killed, still running, or crashed before writing it)"
        jobs.append(Job(d, overrides, metrics, error))
    return sorted(
        jobs, key=lambda j: [int(p) if p.isdigit() else p for p in j.path.relative_to(sweep_dir).parts]
    )


def group(jobs: list[Job]) -> tuple[list[Row], dict[str, str]]:
    """Rows of successful jobs grouped by their varying overrides (minus seed), best mean validation accuracy first
    (a row without one last); plus the overrides every job shares."""
    keys = {k for j in jobs for k in j.overrides} - IGNORED_KEYS
    common = {
        k: v
        for k, v in (jobs[0].overrides.items() if jobs else [])
        if k in keys and all(j.overrides.get(k) == v for j in jobs)
    }
    varying = sorted(keys - set(common))
    rows: dict[tuple, Row] = {}
    for j in jobs:
        cfg = {k: j.overrides.get(k, "") for k in varying}
        rows.setdefault(tuple(cfg.items()), Row(cfg))
        if j.metrics is not None:
            rows[tuple(cfg.items())].jobs.append(j)
    out = [r for r in rows.values() if r.jobs]
    out.sort(key=_rank)
    return out, common


def _rank(row: Row) -> float:
    val = [v for v in row.values("val_acc_best") if math.isfinite(v)]
    return -statistics.fmean(val) if val else math.inf


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan)


def _label(cfg: dict[str, str]) -> str:
    return " ".join(_arg(k, _short(v)) for k, v in cfg.items()) or "(all jobs)"


def _short(value: str) -> str:
    """A decimal override to 4 significant digits (Optuna's `optimizer.lr=0.0012345678` as 0.001235); the CSV's
    own columns keep the value as typed."""
    try:
        x = float(value)
    except ValueError:
        return value
    return f"{x:.4g}" if "." in value or "e" in value.lower() else value


def summarise(row: Row) -> dict[str, Any]:
    acc_m, acc_s = _mean_std(row.values("test_acc"))
    val_m, val_s = _mean_std(row.values("val_acc_best"))
    params = sorted(set(row.values("params")))
    epochs = sorted(set(row.values("epochs_run")))
    return {
        "config": _label(row.config),
        **row.config,
        "n": len(row.jobs),
        "val_acc_best_mean": val_m,
        "val_acc_best_std": val_s,
        "test_acc_mean": acc_m,
        "test_acc_std": acc_s,
        "params": params[0] if len(params) == 1 else "/".join(map(str, params)),
        "epochs": epochs[0] if len(epochs) == 1 else "/".join(map(str, epochs)),
        "wall_seconds_mean": _mean_std(row.values("wall_seconds"))[0],
        "seeds": " ".join(str(j.metrics.get("seed")) for j in row.jobs),
    }


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _pct_std(mean: float, std: float) -> str:
    return _pct(mean) + ("" if math.isnan(std) else f" ± {_pct(std)}")


def _job_lines(jobs: list[Job], common: dict[str, str]) -> list[str]:
    return [
        f"- job `{j.path.name}` `{_label({k: v for k, v in j.overrides.items() if k not in common})}`: {j.error}"
        for j in jobs
    ]


def to_markdown(
    sweep_dir: Path,
    summaries: list[dict[str, Any]],
    common: dict[str, str],
    failed: list[Job],
    pruned: list[Job],
) -> str:
    lines = [f"# Leaderboard: `{sweep_dir}`", ""]
    if common:
        lines += ["Every job: `" + " ".join(_arg(k, v) for k, v in common.items()) + "`", ""]
    lines += [
        "Ranked by the best validation accuracy (choose on it); the test accuracy of that checkpoint is for reporting.",
        "Both are mean ± sample std over seeds (n = jobs).",
        "",
        "| configuration | val acc best % | test acc % | n | params | epochs | wall s (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        params = f"{s['params']:,}" if isinstance(s["params"], int) else s["params"]
        lines.append(
            f"| `{s['config']}` | {_pct_std(s['val_acc_best_mean'], s['val_acc_best_std'])} | "
            f"{_pct_std(s['test_acc_mean'], s['test_acc_std'])} | {s['n']} | {params} | {s['epochs']} | "
            f"{s['wall_seconds_mean']:.0f} |"
        )
    lines += ["", f"Failed jobs: {len(failed)}", *_job_lines(failed, common)]
    if pruned:
        lines += ["", f"Pruned trials (stopped early by the Optuna pruner, not failures): {len(pruned)}"]
        lines += _job_lines(pruned, common)
    return "\n".join(lines) + "\n"


def to_png(path: Path, summaries: list[dict[str, Any]]) -> None:
    """One line per configuration in leaderboard order (best validation at the top): an open dot at its mean best
    validation accuracy and a filled one at its mean test accuracy, each with a ± std bar only where n > 1.
    Dots, not bars: the axis is zoomed to the data (a bar's length from a cut-off baseline would exaggerate the
    gaps), and the axis label says so."""
    import matplotlib

    # no display on servers / in tests
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (key, label, marker face, vertical offset): val just above the line, test just below
    series = [
        ("val_acc_best", "val acc best (ranks the rows)", "none", -0.12),
        ("test_acc", "test acc (reported)", "tab:blue", 0.12),
    ]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.55 * len(summaries) + 1.8)))
    spans, labelled = [], set()
    for key, label, face, dy in series:
        for y, s in enumerate(summaries):
            mean, std = 100 * s.get(f"{key}_mean", math.nan), 100 * s.get(f"{key}_std", math.nan)
            if math.isnan(mean):
                continue
            many = s["n"] > 1 and not math.isnan(std)
            spans += [mean - (std if many else 0), mean + (std if many else 0)]
            ax.errorbar(
                mean,
                y + dy,
                xerr=std if many else None,
                fmt="o",
                color="tab:blue",
                mfc=face,
                capsize=4,
                ms=6,
                # one legend entry per series
                label=None if label in labelled else label,
            )
            labelled.add(label)
            ax.annotate(
                f"{mean:.2f}%" + (f" ± {std:.2f}" if many else ""),
                # right of the bar's end
                (mean + (std if many else 0), y + dy),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    ax.set_yticks(range(len(summaries)), [f"{s['config']} (n={s['n']})" for s in summaries], fontsize=8)
    # best first
    ax.set_ylim(len(summaries) - 0.5, -0.5)
    if spans:
        lo, hi = min(spans), max(spans)
        pad = max(0.5, 0.15 * (hi - lo))
        # room on the right for the labels
        ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + 2 * pad))
        # below the axis label, never over a dot
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    ax.set_xlabel("accuracy %: mean over seeds, ± sample std where n > 1")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        f"{len(summaries)} configurations, best validation first (axis zoomed to the data, not from 0)",
        fontsize=10,
    )
    fig.tight_layout()
    # "tight" keeps the legend below the axes
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_leaderboard(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[Job]]:
    """Write leaderboard.md/.csv/.png into `sweep_dir`; return the summaries and the failed jobs."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    rows, common = group(jobs)
    summaries = [summarise(r) for r in rows]
    failed = [j for j in jobs if j.failed]
    pruned = [j for j in jobs if j.pruned]
    (sweep_dir / "leaderboard.md").write_text(to_markdown(sweep_dir, summaries, common, failed, pruned))
    fields = list(dict.fromkeys([*CSV_FIELDS[:1], *(k for s in summaries for k in s), *CSV_FIELDS[1:]]))
    with (sweep_dir / "leaderboard.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for s in summaries:
            w.writerow(s)
        # failed and pruned jobs stay visible in the CSV too, one line each, the reason in its column
        for j in failed + pruned:
            own = {k: v for k, v in j.overrides.items() if k not in common}
            w.writerow(
                {
                    **{k: v for k, v in own.items() if k in fields},
                    "config": _label(own),
                    "n": 0,
                    "pruned" if j.pruned else "failed": j.error,
                }
            )
    to_png(sweep_dir / "leaderboard.png", summaries)
    return summaries, failed
