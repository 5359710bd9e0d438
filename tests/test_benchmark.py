"""scripts/benchmark.py end to end on tiny synthetic data (a smoke test of the script, not a timing check), and its
device bookkeeping: what a GPU or bf16 run would add is checked here without one."""

import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fmnist_lit import bench_tables, speed, utils
from fmnist_lit.bench_runs import check_bf16, device_overrides
from fmnist_lit.utils import UserError, cpu_name
from tests.conftest import ROOT


def test_benchmark_runs_on_synthetic_data(tmp_path):
    js, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    md.write_text("# prose kept\n\n<!-- benchmark-tables:start -->\nold\n<!-- benchmark-tables:end -->\ntail\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--synthetic", "--models", "mlp",
           "--paths", "a", "b", "c", "e", "--repeats", "2", "--tta", "fast", "--tta-seeds", "0",
           "--precision-compare", "--precision-overrides", "experiment=fast",
           "--search", "pf2-e2-b128", "pf2w8-e3-b128", "--search-seeds", "0", "1", "--json", str(js), "--md", str(md)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(js.read_text())
    rows = {r["path"]: r for r in res["throughput"]["rows"]}
    assert set(rows) == {"a", "b", "c", "e"}
    assert all(r["train_img_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    cpu = f"cpu: {cpu_name()}"  # the CPU's name: rows of two CPUs never replace each other
    assert all(r["device"] == cpu and r["peak_gpu_mb"] is None for r in rows.values())
    assert rows["a"]["data"].startswith("torchvision") and rows["e"]["loop"] == "plain"
    # two interleaved repeats pooled into one row per path: their windows together, each repeat's median kept
    assert all(r["repeats"] == 2 and len(r["train_img_s_per_repeat"]) == 2 for r in rows.values())
    assert len(rows["a"]["train_img_s_windows"]) == 2 * 2  # --synthetic: 2 windows per repeat
    (run,) = res["time_to_accuracy"]["rows"]
    assert run["recipe"] == "fast" and len(run["epoch_test_acc"]) == 1 and 0 <= run["final_test_acc"] <= 1
    # start-up (launch -> first step) comes before the first epoch's end, which comes before the process's end
    assert 0 < run["startup_s"] <= run["epoch_end_s"][0] <= run["wall_s"]
    assert run["device"] == cpu and "data.root" not in run["command"]
    # the same recipe and seed once per precision, nothing else changed
    fp, bf = res["precision_compare"]["rows"]
    assert (fp["precision"], bf["precision"]) == ("32-true", "bf16-mixed") and fp["seed"] == bf["seed"] == 0
    assert fp["recipe"] == bf["recipe"] == "experiment=fast"
    assert fp["command"].replace("32-true", "bf16-mixed") == bf["command"]
    assert all(0 <= r["test_acc"] <= 1 and r["wall_s"] > 0 and r["device_detail"].startswith("cpu")
               for r in (fp, bf))
    for section in ("throughput", "time_to_accuracy", "precision_compare"):
        assert {"cpu", "cores", "torch", "lightning"} <= set(res[section]["machines"][cpu])
    # the recipe search: every (candidate, seed), validation accuracy at each half epoch and at the end
    search = {(r["candidate"], r["seed"]): r for r in res["recipe_search"]["rows"]}
    assert set(search) == {(c, s) for c in ("pf2-e2-b128", "pf2w8-e3-b128") for s in (0, 1)}
    assert all(0 <= r["val_acc"] <= 1 and r["train_s"] > 0 and r["device"] == cpu for r in search.values())
    # 500 training images at batch 128: 3 steps an epoch, evaluated after steps 1 and 3 of each (epochs 0.3, 1.0 ..);
    # the last evaluation is the end of training, and it is the row's val_acc
    for (cand, seed), keys in {("pf2-e2-b128", 0): ["0.3", "1.0", "1.3", "2.0"],
                               ("pf2w8-e3-b128", 1): ["0.3", "1.0", "1.3", "2.0", "2.3", "3.0"]}.items():
        by_epoch = search[(cand, seed)]["val_acc_by_epoch"]
        assert list(by_epoch) == keys and search[(cand, seed)]["val_acc"] == by_epoch[keys[-1]]
    assert search[("pf2-e2-b128", 0)]["net"] == "FastCNN 16/32/64, pool first, extra=[0, 0, 1]"
    text = md.read_text()
    assert "| `pf2-e2-b128` | FastCNN 16/32/64, pool first, extra=[0, 0, 1] | 2 | 128 | 0.01 | 0 / 1 |" in text
    assert text.startswith("# prose kept") and text.endswith("tail\n") and "old" not in text
    assert f"| mlp | {cpu} | a |" in text and f"| fast | {cpu} | 0 |" in text
    assert "### bf16-mixed vs fp32 test accuracy" in text and "| experiment=fast | cpu: " in text
    assert "trainer.precision=<precision>" in text


def _row(model, path, img_s, **kw):
    return {"model": model, "path": path, "data": "fast", "precision": "32-true", "channels_last": True,
            "compile": False, "loop": "lightning", "train_img_s": img_s, "peak_rss_mb": 1.0, "command": "c", **kw}


def test_merge_keeps_devices_apart_and_reads_old_rows_as_cpu():
    old = _row("mlp", "a", 100)  # written before rows had a device
    res = {"throughput": {"rows": [old]}}
    bench_tables.merge(res, "throughput", [_row("mlp", "a", 900, device="H100")], ("model", "path", "device"), {})
    assert [r["train_img_s"] for r in res["throughput"]["rows"]] == [100, 900]  # the GPU row sits beside
    bench_tables.merge(res, "throughput", [_row("mlp", "a", 120, device="cpu")], ("model", "path", "device"), {})
    assert sorted(r["train_img_s"] for r in res["throughput"]["rows"]) == [120, 900]  # the old row was the cpu's
    assert set(res["throughput"]["machines"]) == {"H100", "cpu"}


def test_old_json_machine_becomes_the_cpu_rows_machine():
    res = {"machine": {"cpu": "AMD EPYC"}, "throughput": {"rows": [_row("mlp", "a", 100)], "date": "d"},
           # written between the two formats: a bare "cpu" device and that CPU's machine under "cpu"
           "time_to_accuracy": {"rows": [{"recipe": "fast", "seed": 0, "device": "cpu"}],
                                "machines": {"cpu": {"cpu": "Xeon 8480"}}, "date": "d"}}
    bench_tables.upgrade(res)
    assert "machine" not in res and res["throughput"]["machines"] == {"cpu: AMD EPYC": {"cpu": "AMD EPYC"}}
    assert res["throughput"]["rows"][0]["device"] == "cpu: AMD EPYC"
    assert res["time_to_accuracy"]["rows"][0]["device"] == "cpu: Xeon 8480"  # its own machine, not the legacy one
    del res["time_to_accuracy"]  # a stub row, not renderable
    # a later run on another CPU adds rows beside the old ones instead of replacing them and taking their credit
    bench_tables.merge(res, "throughput", [_row("mlp", "a", 300, device="cpu: Xeon 8480")],
                       ("model", "path", "device"), {"cpu": "Xeon 8480"})
    assert [r["train_img_s"] for r in res["throughput"]["rows"]] == [100, 300]
    bench_tables.merge(res, "throughput", [_row("mlp", "a", 9, device="H100")], ("model", "path", "device"),
                       {"cpu": "Xeon", "gpu": "H100"})
    text = bench_tables.tables(res)
    assert "Machine of the cpu: AMD EPYC rows: cpu=AMD EPYC" in text and "Machine of the H100 rows (measured " in text
    assert "gpu=H100" in text


def test_throughput_ratios_compare_only_the_same_device():
    rows = [_row("mlp", "a", 100), _row("mlp", "c", 200), _row("mlp", "a", 1000, device="H100", peak_gpu_mb=50.0),
            _row("mlp", "c", 5000, device="H100", peak_gpu_mb=60.0)]
    lines = bench_tables.throughput_table({"rows": rows}).splitlines()
    assert "peak GPU MiB" in lines[3]
    cpu_c, gpu_c = (next(ln for ln in lines if ln.startswith(f"| mlp | {d} | c |")) for d in ("cpu", "H100"))
    assert "| 2.00x |" in cpu_c and "| 5.00x |" in gpu_c and "| 60 |" in gpu_c
    # CPU-only tables keep their columns
    assert "peak GPU MiB" not in bench_tables.throughput_table({"rows": rows[:2]})


def test_precision_table_pairs_runs_and_applies_the_tolerance():
    def run(seed, precision, acc):
        return {"recipe": "default", "seed": seed, "precision": precision, "device": "cpu",
                "device_detail": "cpu: X", "bf16_native": True, "test_acc": acc, "wall_s": 10.0, "benchmark_command": "b",
                "command": f"python train.py seed={seed} trainer.precision={precision}"}
    rows = [run(0, "32-true", 0.9256), run(0, "bf16-mixed", 0.9231), run(1, "32-true", 0.9256),
            run(1, "bf16-mixed", 0.9220)]
    lines = bench_tables.precision_table({"rows": rows}).splitlines()
    s0, s1 = (next(ln for ln in lines if ln.startswith(f"| default | cpu: X | {s} |")) for s in (0, 1))
    assert "| 92.56% | 92.31% | -0.25 | yes |" in s0 and "| 92.56% | 92.20% | -0.36 | no |" in s1
    assert "`python train.py seed=0 trainer.precision=<precision>`" in s0


def test_bf16_comparison_refused_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "cpu_supports_bf16", lambda: False)
    with pytest.raises(UserError, match="neither AMX nor AVX512-BF16.*--allow-emulated-bf16"):
        check_bf16("cpu", allow_emulated=False)
    check_bf16("cpu", allow_emulated=True)  # forced
    monkeypatch.setattr(utils, "cpu_supports_bf16", lambda: True)
    check_bf16("cpu", allow_emulated=False)  # an AMX / AVX512-BF16 CPU


def test_precision_auto_is_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(utils, "cpu_supports_bf16", lambda: False)
    assert utils.resolve_precision("auto", "cpu") == "32-true"  # AVX2: emulated bf16 is slower than fp32
    monkeypatch.setattr(utils, "cpu_supports_bf16", lambda: True)
    assert utils.resolve_precision("auto", "cpu") == "bf16-mixed"  # AMX / AVX512-BF16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native, expected in ((True, "bf16-mixed"), (False, "16-mixed")):  # Ampere+, then e.g. a T4 or V100
        # as torch reports it: a pre-Ampere GPU "supports" bf16 unless emulation is excluded
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, native=native: native or including_emulation)
        assert utils.resolve_precision("auto", "gpu") == expected
    assert utils.resolve_precision("32-true", "gpu") == "32-true"  # an explicit choice is kept


def _benchmark_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _benchmark_main():
    return _benchmark_script().main


@pytest.mark.parametrize("args, message", [
    (["--precision-compare"], "--allow-emulated-bf16"),
    (["--accelerator", "cuda"], "sees no CUDA GPU"),
    (["--search", "pf2-e2-b128", "no-such-recipe"], "--search: unknown candidate(s) ['no-such-recipe']"),
])
def test_cli_refuses_before_measuring(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "cpu_supports_bf16", lambda: False)
    js = tmp_path / "b.json"
    with pytest.raises(SystemExit) as e:
        _benchmark_main()(["--no-throughput", "--tta", *args, "--json", str(js), "--md", str(tmp_path / "b.md")])
    assert e.value.code == 2 and message in capsys.readouterr().err and not js.exists()


def test_search_is_refused_on_a_gpu_run(tmp_path, monkeypatch, capsys):
    # its plain loop runs on the CPU: under --accelerator cuda it would silently measure the CPU instead
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit) as e:
        _benchmark_main()(["--no-throughput", "--tta", "--accelerator", "cuda", "--search",
                           "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md")])
    assert e.value.code == 2 and "--search is a CPU measurement" in capsys.readouterr().err


def test_search_refuses_candidates_the_data_is_too_small_for(tmp_path, capsys):
    # the synthetic data's 500 training images are one batch of 512: too few steps for one-cycle
    with pytest.raises(SystemExit) as e:
        _benchmark_main()(["--synthetic", "--no-throughput", "--tta", "--search", "pf2-e2-b512", "pf2-e2-b128",
                           "--json", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--search: pf2-e2-b512: fewer than 5 steps on 500 training images" in err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("target", ["--json", "--md"])
def test_synthetic_numbers_never_reach_the_docs(tmp_path, capsys, target):
    # a stand-in checkout, so that a regression of the guard would write into tmp_path, not into the real docs/
    script = _benchmark_script()
    script.ROOT = tmp_path
    (tmp_path / "docs").mkdir()
    dest = tmp_path / "docs" / ("benchmarks.json" if target == "--json" else "BENCHMARKS.md")
    dest.write_text("measured\n")
    with pytest.raises(SystemExit) as e:
        script.main(["--synthetic", "--no-throughput", "--tta", target, str(dest)])
    assert e.value.code == 2 and "outside docs/" in capsys.readouterr().err and dest.read_text() == "measured\n"


def test_train_runs_are_pinned_to_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_overrides("cpu") == []  # auto is the CPU here: the commands stay the ones users type
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_overrides("cpu") == ["trainer.accelerator=cpu"]
    assert device_overrides("cuda") == ["trainer.accelerator=gpu", "data.keep_on_device=true"]


def test_step_timer_waits_for_the_gpu_only(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    timer = speed.StepTimer()
    for dev in ("cpu", "cuda"):
        timer.on_train_batch_end(None, SimpleNamespace(device=torch.device(dev)), None, None, 0)
    assert synced == [torch.device("cuda")] and len(timer.times) == 2
