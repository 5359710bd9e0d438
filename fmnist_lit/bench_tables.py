"""Markdown tables from `docs/benchmarks.json` (written by `scripts/benchmark.py`), and their refresh inside
`docs/BENCHMARKS.md` between two marker comments (the prose around them is kept)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

START, END = "<!-- benchmark-tables:start -->", "<!-- benchmark-tables:end -->"


def _f(v: Any, nd: int = 0) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def _ratio(v: float | None, ref: float | None) -> str:
    return f"{v / ref:.2f}x" if v and ref else "–"


def _load(row: dict[str, Any]) -> str:
    a, b = row.get("loadavg_before"), row.get("loadavg_after")
    return f"{a[0]:.1f} → {b[0]:.1f}" if a and b else "–"


def _train(row: dict[str, Any]) -> str:
    """Median img/s; with --repeats, each interleaved repeat's own median after it."""
    per = row.get("train_img_s_per_repeat")
    return _f(row["train_img_s"]) + (f" ({' / '.join(_f(v) for v in per)})" if per else "")


def throughput_table(thr: dict[str, Any]) -> str:
    rows = thr["rows"]
    cmds = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in rows))
    out = [("| model | path | data | precision | channels_last | compile | loop | train img/s | vs (a) | vs (e) "
           "| infer img/s | peak RSS MiB | compile s | load 1-min before → after |"),
           "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = {p["path"]: p["train_img_s"] for p in rows if p["model"] == r["model"]}
        out.append(f"| {r['model']} | {r['path']} | {r['data']} | {r['precision']} | {r['channels_last']} "
                   f"| {r['compile']} | {r['loop']} | {_train(r)} | {_ratio(r['train_img_s'], ref.get('a'))} "
                   f"| {_ratio(r['train_img_s'], ref.get('e'))} | {_f(r.get('infer_img_s'))} "
                   f"| {_f(r['peak_rss_mb'])} | {_f(r.get('compile_s'), 1)} | {_load(r)} |")
    return "Commands:\n" + cmds + "\n\n" + "\n".join(out)


def _mean_std(xs: list[float | None], nd: int) -> str:
    if not xs or any(x is None for x in xs):
        return f"not reached in {sum(x is None for x in xs)}/{len(xs)} runs" if xs else "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{nd}f} ± {sd:.{nd}f} (n={len(xs)})"


def tta_table(tta: dict[str, Any]) -> str:
    runs = tta["rows"]
    out = [("| recipe | seed | s to 91% | s to 93% | s to first step | test acc after each epoch | epoch end (s) "
           "| final test acc (val-selected ckpt) | wall s | load before → after |"),
           "|---|---:|---:|---:|---:|---|---|---:|---:|---|"]
    for r in runs:
        accs = ", ".join(f"{a:.4f}" for a in r["epoch_test_acc"])
        ends = ", ".join(f"{t:.0f}" for t in r["epoch_end_s"])
        final = f"{r['final_test_acc']:.4f}"
        if r.get("stopped_at_target"):
            final += f" (run stopped after epoch {r['epochs_run']}, at the target)"
        out.append(f"| {r['recipe']} | {r['seed']} | {_f(r['s_to_91'], 1)} | {_f(r['s_to_93'], 1)} "
                   f"| {_f(r.get('startup_s'), 1)} | {accs} "
                   f"| {ends} | {final} | {r['wall_s']:.1f} | {_load(r)} |")
    out += ["", "| recipe | runs | s to 91% (mean ± std) | final test acc (mean ± std) | final >= 91% | command |",
            "|---|---:|---|---|---:|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        rs = [r for r in runs if r["recipe"] == recipe]
        cmd = rs[0]["command"].replace(f"seed={rs[0]['seed']}", "seed=<seed>")
        out.append(f"| {recipe} | {len(rs)} | {_mean_std([r['s_to_91'] for r in rs], 1)} "
                   f"| {_mean_std([100 * r['final_test_acc'] for r in rs], 2)} "
                   f"| {sum(r['final_test_acc'] >= 0.91 for r in rs)}/{len(rs)} | `{cmd}` |")
    return "\n".join(out)


def tables(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    parts = ["Machine: " + ", ".join(f"{k}={v}" for k, v in m.items())]
    if "throughput" in res:
        t = res["throughput"]
        parts += [f"### Throughput ({t['date']})", throughput_table(t)]
    if "time_to_accuracy" in res:
        t = res["time_to_accuracy"]
        cmds = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["benchmark_command"] for r in t["rows"]))
        parts += [f"### Time to accuracy ({t['date']})", "Commands:\n" + cmds, tta_table(t)]
    return "\n\n".join(parts)


def update_markdown(path: Path, res: dict[str, Any]) -> None:
    """Replace the text between the markers (or append the block if they are missing)."""
    block = f"{START}\n{tables(res)}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
