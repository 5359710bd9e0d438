"""scripts/benchmark.py end to end on tiny synthetic data: a smoke test of the script, not a timing check."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_runs_on_synthetic_data(tmp_path):
    js, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    md.write_text("# prose kept\n\n<!-- benchmark-tables:start -->\nold\n<!-- benchmark-tables:end -->\ntail\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--synthetic", "--models", "mlp",
           "--paths", "a", "b", "c", "e", "--repeats", "2", "--tta", "fast", "--tta-seeds", "0", "--json", str(js), "--md", str(md)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(js.read_text())
    rows = {r["path"]: r for r in res["throughput"]["rows"]}
    assert set(rows) == {"a", "b", "c", "e"}
    assert all(r["train_img_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert rows["a"]["data"].startswith("torchvision") and rows["e"]["loop"] == "plain"
    # two interleaved repeats pooled into one row per path: their windows together, each repeat's median kept
    assert all(r["repeats"] == 2 and len(r["train_img_s_per_repeat"]) == 2 for r in rows.values())
    assert len(rows["a"]["train_img_s_windows"]) == 2 * 2  # --synthetic: 2 windows per repeat
    (run,) = res["time_to_accuracy"]["rows"]
    assert run["recipe"] == "fast" and len(run["epoch_test_acc"]) == 1 and 0 <= run["final_test_acc"] <= 1
    # start-up (launch -> first step) comes before the first epoch's end, which comes before the process's end
    assert 0 < run["startup_s"] <= run["epoch_end_s"][0] <= run["wall_s"]
    assert {"cpu", "cores", "torch", "lightning"} <= set(res["machine"])
    text = md.read_text()
    assert text.startswith("# prose kept") and text.endswith("tail\n") and "old" not in text
    assert "| mlp | a |" in text and "| fast | 0 |" in text
