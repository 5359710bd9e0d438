"""`docs/benchmarks.json` (written by `scripts/benchmark.py`): how new rows merge into it, its markdown tables, and
their refresh inside `docs/BENCHMARKS.md` between two marker comments (the prose around them is kept).

The JSON has one section per measurement (throughput, time_to_accuracy, precision_compare, recipe_search), each
with its `rows`, the `date` of its last update and, per device, the `machines` that measured its rows.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

START, END = "<!-- benchmark-tables:start -->", "<!-- benchmark-tables:end -->"
SECTIONS = ("throughput", "time_to_accuracy", "precision_compare", "recipe_search")
PRECISIONS = ("32-true", "bf16-mixed")  # the pair of --precision-compare, fp32 first
TOLERANCE_PT = 0.3  # issue 4: bf16-mixed test accuracy within 0.3 points of fp32's


def device(row: dict[str, Any]) -> str:
    """The device that measured a row: "cpu: <CPU name>" or the GPU's name; a bare "cpu" for rows written before
    devices were recorded (`upgrade` names their CPU)."""
    return row.get("device", "cpu")


def _key(row: dict[str, Any], key: tuple[str, ...]) -> tuple:
    return tuple(device(row) if k == "device" else row[k] for k in key)


def upgrade(res: dict[str, Any]) -> None:
    """Older JSON: one top-level `machine` that measured every row, and rows with no device or the bare device "cpu".
    Such rows get the device "cpu: <that machine's CPU>", as new CPU rows do, so that rows from two CPUs are never
    merged, compared or credited to the wrong machine."""
    legacy = res.pop("machine", None)
    for name in SECTIONS:
        sec = res.get(name)
        if sec is None:
            continue
        machines = sec.setdefault("machines", {})
        if legacy is not None:
            machines.setdefault("cpu", legacy)
        if "cpu" in machines:
            m = machines.pop("cpu")
            dev = f"cpu: {m.get('cpu', 'unknown')}"
            machines.setdefault(dev, m)
            for r in sec["rows"]:
                if device(r) == "cpu":
                    r["device"] = dev


def merge(res: dict[str, Any], section: str, new: list[dict[str, Any]], key: tuple[str, ...],
          machine: dict[str, Any]) -> None:
    """New rows replace the section's rows with the same `key` (include "device": then CPU and GPU rows coexist);
    `machine` (`speed.machine_info()`) is recorded, dated, as the machine of the new rows' devices."""
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sec = res.setdefault(section, {"rows": []})
    replaced = {_key(n, key) for n in new}
    sec["rows"] = [r for r in sec["rows"] if _key(r, key) not in replaced] + new
    sec["date"] = now
    for d in dict.fromkeys(device(n) for n in new):
        sec.setdefault("machines", {})[d] = {"date": now, **machine}


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


def _commands(rows: list[dict[str, Any]], field: str) -> str:
    return "Commands:\n" + "\n".join(f"- `{c}`" for c in dict.fromkeys(r[field] for r in rows))


def throughput_table(thr: dict[str, Any]) -> str:
    rows = thr["rows"]
    gpu = any(r.get("peak_gpu_mb") is not None for r in rows)  # the column only once a GPU row exists
    out = [("| model | device | path | data | precision | channels_last | compile | loop | train img/s | vs (a) "
            "| vs (e) | infer img/s | peak RSS MiB | " + ("peak GPU MiB | " if gpu else "")
            + "compile s | load 1-min before → after |"),
           "|---|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|" if gpu else "") + "---:|---|"]
    for r in rows:
        # ratios only between paths of the same model on the same device
        ref = {p["path"]: p["train_img_s"] for p in rows if (p["model"], device(p)) == (r["model"], device(r))}
        out.append(f"| {r['model']} | {device(r)} | {r['path']} | {r['data']} | {r['precision']} "
                   f"| {r['channels_last']} | {r['compile']} | {r['loop']} | {_train(r)} "
                   f"| {_ratio(r['train_img_s'], ref.get('a'))} | {_ratio(r['train_img_s'], ref.get('e'))} "
                   f"| {_f(r.get('infer_img_s'))} | {_f(r['peak_rss_mb'])} | "
                   + (f"{_f(r.get('peak_gpu_mb'))} | " if gpu else "")
                   + f"{_f(r.get('compile_s'), 1)} | {_load(r)} |")
    return _commands(rows, "command") + "\n\n" + "\n".join(out)


def _mean_std(xs: list[float | None], nd: int) -> str:
    if not xs or any(x is None for x in xs):
        return f"not reached in {sum(x is None for x in xs)}/{len(xs)} runs" if xs else "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{nd}f} ± {sd:.{nd}f} (n={len(xs)})"


def tta_table(tta: dict[str, Any]) -> str:
    runs = tta["rows"]
    out = [("| recipe | device | seed | s to 91% | s to 93% | s to first step | test acc after each epoch "
            "| epoch end (s) | final test acc (val-selected ckpt) | wall s | load before → after |"),
           "|---|---|---:|---:|---:|---:|---|---|---:|---:|---|"]
    for r in runs:
        accs = ", ".join(f"{a:.4f}" for a in r["epoch_test_acc"])
        ends = ", ".join(f"{t:.0f}" for t in r["epoch_end_s"])
        final = f"{r['final_test_acc']:.4f}"
        if r.get("stopped_at_target"):
            final += f" (run stopped after epoch {r['epochs_run']}, at the target)"
        out.append(f"| {r['recipe']} | {device(r)} | {r['seed']} | {_f(r['s_to_91'], 1)} | {_f(r['s_to_93'], 1)} "
                   f"| {_f(r.get('startup_s'), 1)} | {accs} "
                   f"| {ends} | {final} | {r['wall_s']:.1f} | {_load(r)} |")
    out += ["", ("| recipe | device | runs | s to 91% (mean ± std) | final test acc (mean ± std) | final >= 91% "
                 "| command |"),
            "|---|---|---:|---|---|---:|---|"]
    for recipe, dev in dict.fromkeys((r["recipe"], device(r)) for r in runs):
        rs = [r for r in runs if (r["recipe"], device(r)) == (recipe, dev)]
        cmd = rs[0]["command"].replace(f"seed={rs[0]['seed']}", "seed=<seed>")
        out.append(f"| {recipe} | {dev} | {len(rs)} | {_mean_std([r['s_to_91'] for r in rs], 1)} "
                   f"| {_mean_std([100 * r['final_test_acc'] for r in rs], 2)} "
                   f"| {sum(r['final_test_acc'] >= 0.91 for r in rs)}/{len(rs)} | `{cmd}` |")
    return _commands(runs, "benchmark_command") + "\n\n" + "\n".join(out)


def precision_table(sec: dict[str, Any]) -> str:
    """One line per (recipe, device, seed): the fp32 and bf16-mixed runs side by side."""
    rows = sec["rows"]
    out = [("| recipe | device | seed | fp32 test acc | bf16-mixed test acc | bf16 − fp32 (points) "
            f"| within {TOLERANCE_PT} pt | fp32 wall s | bf16 wall s | native bf16 | command |"),
           "|---|---|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for key in dict.fromkeys((r["recipe"], device(r), r["seed"]) for r in rows):
        pair = {r["precision"]: r for r in rows if (r["recipe"], device(r), r["seed"]) == key}
        fp, bf = (pair.get(p) for p in PRECISIONS)
        acc = [f"{100 * r['test_acc']:.2f}%" if r else "–" for r in (fp, bf)]
        wall = [_f(r["wall_s"], 1) if r else "–" for r in (fp, bf)]
        diff = round(100 * (bf["test_acc"] - fp["test_acc"]), 2) if fp and bf else None  # test_acc: 4 decimals
        within = "–" if diff is None else "yes" if abs(diff) <= TOLERANCE_PT else "no"
        run = fp or bf
        cmd = run["command"].replace(f"trainer.precision={run['precision']}", "trainer.precision=<precision>")
        out.append(f"| {key[0]} | {run.get('device_detail', key[1])} | {key[2]} | {acc[0]} | {acc[1]} "
                   f"| {'–' if diff is None else f'{diff:+.2f}'} | {within} | {wall[0]} | {wall[1]} "
                   f"| {'yes' if run['bf16_native'] else 'no (emulated)'} | `{cmd}` |")
    return (_commands(rows, "benchmark_command") + "\n\n" + "\n".join(out)
            + "\n\n`<precision>`: `32-true` and `bf16-mixed`, one run each; test acc is that of the checkpoint "
            "chosen on validation accuracy.")


def search_table(sec: dict[str, Any]) -> str:
    """One line per candidate of scripts/fast_search.py: each seed's training seconds and final val accuracy."""
    rows = sec["rows"]
    out = ["| candidate | net | epochs | batch | peak LR | seeds | training s | val acc at the end | mean ± std |",
           "|---|---|---:|---:|---:|---|---|---|---|"]
    for cand, dev in dict.fromkeys((r["candidate"], device(r)) for r in rows):
        rs = sorted((r for r in rows if (r["candidate"], device(r)) == (cand, dev)), key=lambda r: r["seed"])
        first, accs = rs[0], [100 * r["val_acc"] for r in rs]
        out.append(f"| `{cand}` | {first['net']} | {first['epochs']:g} | {first['batch']} | {first['peak_lr']:g} "
                   f"| {' / '.join(str(r['seed']) for r in rs)} | {' / '.join(_f(r['train_s'], 1) for r in rs)} "
                   f"| {' / '.join(f'{a:.2f}%' for a in accs)} | {_mean_std(accs, 2) if len(rs) > 1 else '–'} |")
    return (_commands(rows, "benchmark_command") + "\n\n" + "\n".join(out) + "\n\nTraining seconds exclude the "
            "validation passes (every half epoch); validation is the 5k split carved out of the training set.")


def _describe(m: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in m.items() if k != "date")


def tables(res: dict[str, Any]) -> str:
    parts, seen = [], set()
    if "machine" in res:  # JSON from before GPU support (see `upgrade`): one machine measured every row
        parts.append("Machine: " + _describe(res["machine"]))
    for name, title, table in (("throughput", "Throughput", throughput_table),
                               ("time_to_accuracy", "Time to accuracy", tta_table),
                               ("precision_compare", "bf16-mixed vs fp32 test accuracy", precision_table),
                               ("recipe_search", "Recipe search for experiment=fast (validation accuracy)",
                                search_table)):
        if name not in res:
            continue
        parts.append(f"### {title} ({res[name]['date']})")
        for dev, m in res[name].get("machines", {}).items():
            when = f" (measured {m['date']})" if "date" in m else ""
            desc = _describe(m)
            parts.append(f"Machine of the {dev} rows{when}: " + ("the one above" if desc in seen else desc))
            seen.add(desc)
        parts.append(table(res[name]))
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
