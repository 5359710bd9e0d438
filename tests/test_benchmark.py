"""benchmarks/throughput.py: its timing arithmetic and results rows, and one end-to-end run on synthetic data (a
smoke test of the script, not a timing check)."""

import json
from types import SimpleNamespace

import pytest
import torch

from benchmarks import throughput
from fmnist_lit.hardware import cpu_name
from tests.helpers import ROOT, run_script


def test_window_rates_time_full_windows_after_the_warmup():
    # perf_counter after steps 0..6
    times = [0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5]
    # warm-up 2 (steps 0, 1): steps 2-3 run from times[1] to times[3], steps 4-5 from times[3] to times[5];
    # step 6 alone is not a full window
    assert throughput.window_rates(times, batch=10, warmup=2, window=2) == [20.0, 10.0]
    # the script's step count gives exactly --windows windows
    assert len(throughput.window_rates([float(i) for i in range(3 + 6 * 5)], 256, warmup=3, window=6)) == 5


def test_summary_pools_repeats_and_compares_the_fastest_windows():
    def row(path, precision, windows):
        return {"model": "m", "path": path, "precision": precision, "windows_img_s": windows}

    rows = [
        row("a", "32-true", [100.0, 300.0]),
        row("c", "bf16-mixed", [300.0]),
        row("e", "bf16-mixed", [750.0, 100.0]),
        # a second repeat of c: its windows pooled with the first's
        row("c", "bf16-mixed", [600.0, 400.0]),
    ]
    lines = {(ln["path"], ln["precision"]): ln for ln in throughput.summary(rows)}
    c = lines["c", "bf16-mixed"]
    assert (c["img/s"], c["median"], c["windows"]) == (600, 400, 3)
    # 600 / 300 and 600 / 750
    assert (c["vs_a"], c["vs_e"]) == ("2.00x", "0.80x")
    # no fp32 plain loop measured: no ratio
    assert lines["a", "32-true"]["vs_e"] == "-"


def test_results_rows_are_appended_with_the_machine(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text('{"kind": "earlier"}\n')
    args = SimpleNamespace(
        accelerator="cpu", synthetic=False, command="python benchmarks/throughput.py --tta", results=results
    )
    # a train.py run's own threads
    throughput.record({"kind": "tta", "threads": 1}, args)
    throughput.record({"kind": "throughput"}, args)
    earlier, tta, tput = (json.loads(line) for line in results.read_text().splitlines())
    assert earlier == {"kind": "earlier"}
    assert tta["cpu"] == tput["cpu"] == cpu_name() and tta["torch"] == torch.__version__
    assert (tta["threads"], tput["threads"]) == (1, torch.get_num_threads())
    assert tta["command"] == "python benchmarks/throughput.py --tta" and tta["date"][:2] == "20"


def test_main_writes_results_but_never_synthetic_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "RESULTS", tmp_path / "results.jsonl")
    monkeypatch.setattr(
        throughput,
        "throughput",
        lambda model, path, precision, args, out: {
            "kind": "throughput",
            "model": model,
            "path": path,
            "precision": precision,
            "windows_img_s": [1.0],
        },
    )
    assert throughput.main(["--synthetic", "--models", "mlp", "--paths", "b"]) == 0
    assert not (tmp_path / "results.jsonl").exists()
    assert (
        throughput.main(["--models", "mlp", "--paths", "b", "c", "--precision", "32-true", "bf16-mixed"]) == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["path"], r["precision"]) for r in rows] == [
        ("b", "32-true"),
        ("c", "32-true"),
        ("c", "bf16-mixed"),
    ]
    assert not any(r["synthetic"] for r in rows)


def test_overrides_reach_the_measured_config(tmp_path):
    """--overrides (e.g. a candidate net's widths) are composed into the measured run: the row names them, and
    the net measured is the one they build."""
    results = tmp_path / "results.jsonl"
    args = ["--synthetic", "--models", "speed_net", "--paths", "e", "--results", str(results)]
    built = []
    real = throughput.instantiate

    def spy(cfg, *a, **kw):
        obj = real(cfg, *a, **kw)
        built.append(obj)
        return obj

    with pytest.MonkeyPatch.context() as m:
        m.setattr(throughput, "instantiate", spy)
        assert throughput.main([*args, "--overrides", "model.net.widths=[8,16,16]"]) == 0
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["overrides"] == "model.net.widths=[8,16,16]"
    nets = [o.net for o in built if hasattr(o, "net")]
    assert nets and all(n.head[-1].in_features == 16 for n in nets)


@pytest.mark.parametrize("folder", ["docs", "benchmarks"])
def test_synthetic_results_are_refused_inside_the_repository(tmp_path, monkeypatch, capsys, folder):
    # a stand-in checkout: were the guard to fail, tmp_path would be written, not the real results
    monkeypatch.setattr(throughput, "ROOT", tmp_path.resolve())
    dest = tmp_path / folder / "results.jsonl"
    dest.parent.mkdir()
    dest.write_text("measured\n")
    with pytest.raises(SystemExit) as e:
        throughput.main(["--synthetic", "--results", str(dest)])
    assert e.value.code == 2 and "outside docs/ and benchmarks/" in capsys.readouterr().err
    assert dest.read_text() == "measured\n"


def test_step_timer_waits_for_the_gpu_only(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    timer = throughput.StepTimer()
    for dev in ("cpu", "cuda"):
        timer.on_train_batch_end(None, SimpleNamespace(device=torch.device(dev)), None, None, 0)
    assert synced == [torch.device("cuda")] and len(timer.times) == 2


@pytest.mark.slow
def test_throughput_and_time_to_accuracy_on_synthetic_data(tmp_path):
    results = tmp_path / "results.jsonl"
    script = ("benchmarks/throughput.py", "--synthetic", "--threads", "1")
    # this checkout's package, wherever the venv's install points
    env = {"PYTHONPATH": str(ROOT)}
    for args in (
        ["--models", "fast_cnn", "--paths", "a", "b", "c", "e", "--precision", "32-true", "bf16-mixed"],
        ["--tta", "--seeds", "0"],
    ):
        proc = run_script(*script, *args, "--results", str(results), cwd=tmp_path, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    tput = {(r["path"], r["precision"]): r for r in rows if r["kind"] == "throughput"}
    assert set(tput) == {
        ("a", "32-true"),
        ("b", "32-true"),
        ("c", "32-true"),
        ("c", "bf16-mixed"),
        ("e", "32-true"),
        ("e", "bf16-mixed"),
    }
    # --synthetic: 2 windows
    assert all(r["img_s"] > 0 and len(r["windows_img_s"]) == 2 for r in tput.values())
    assert all(r["synthetic"] and r["cpu"] == cpu_name() and r["threads"] == 1 for r in rows)
    (tta,) = [r for r in rows if r["kind"] == "tta"]
    # launch -> first step -> end of the (only) epoch -> end of the process
    assert 0 < tta["s_to_first_step"] <= tta["s_by_epoch"][0] <= tta["wall_s"]
    # the callback's test accuracy after the last epoch is that of the run's own test of the same weights
    assert tta["test_acc_by_epoch"] == [pytest.approx(tta["final_test_acc"], abs=0.006)]
    reached = tta["test_acc_by_epoch"][0] >= 0.91
    assert tta["s_to_target"] == (tta["s_by_epoch"][0] if reached else None)
    assert "experiment=fast seed=0" in tta["train_command"] and tta["threads"] == 1


def test_speedrun_summary_gives_mean_std_and_minimum():
    from benchmarks import speedrun

    rows = [
        {
            "recipe": "experiment=speed94",
            "test_acc": a,
            "val_acc": v,
            "wall_s": w,
            "train_tflops": 1.5,
            "precision": "32-true",
        }
        for a, v, w in [(0.94, 0.946, 100.0), (0.942, 0.944, 110.0), (0.938, None, 120.0)]
    ]
    line = speedrun.summary(rows)
    assert line["n"] == 3 and line["test_acc"] == "0.9400 ± 0.0020" and line["min"] == "0.9380"
    # a run without validation is left out of the validation mean, not counted as 0
    assert line["val_acc"] == "0.9450 ± 0.0014" and line["wall_s"] == "110 ± 10"


def test_speedrun_versus_ratio_and_the_best_both_reached():
    from benchmarks import speedrun

    def row(recipe, curve, target):
        r = {
            "recipe": recipe,
            "s_by_epoch": [s for s, _ in curve],
            "test_acc_by_epoch": [a for _, a in curve],
        }
        return r | {"s_to_target": speedrun.seconds_to(r, target)}

    fast = [(100.0, 0.93), (200.0, 0.948)]
    slow = [(300.0, 0.94), (900.0, 0.949), (1200.0, 0.951)]
    # both reach the target: the ratio of their first times there
    rows = [row("a", fast, 0.94), row("b", slow, 0.94)]
    assert rows[0]["s_to_target"] == 200.0 and rows[1]["s_to_target"] == 300.0
    assert speedrun.versus_line(rows, 0.94) == "a reaches 94.0% 1.50x sooner than b"
    # one never does: no ratio at the target, but one at 94.8%, the lower of the two best accuracies
    rows = [row("a", fast, 0.95), row("b", slow, 0.95)]
    assert rows[0]["s_to_target"] is None
    line = speedrun.versus_line(rows, 0.95)
    assert line.startswith("not both reached 95.0%: no ratio; both reached 94.80%")
    assert line.endswith("a 4.50x sooner (200 s against 900 s)")


@pytest.mark.slow
def test_speedrun_on_synthetic_data(tmp_path):
    results = tmp_path / "results.jsonl"
    common = ["--synthetic", "--results", str(results)]
    recipe = ["experiment=speed94", "threads=1"]
    proc = run_script("benchmarks/speedrun.py", *common, "--runs", "2", *recipe, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1] and all(r["kind"] == "speedrun" for r in rows)
    assert all(0 <= r["test_acc"] <= 1 and r["train_tflops"] > 0 and r["cpu"] == cpu_name() for r in rows)
    assert "experiment=speed94" in proc.stdout and " ± " in proc.stdout
    # side by side: both timed to the target (0: the first validation), then their ratio
    versus = ["--versus", "experiment=fast", "--target", "0.0"]
    proc = run_script("benchmarks/speedrun.py", *common, *versus, *recipe, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x sooner than experiment=fast" in proc.stdout
    versus_rows = [json.loads(line) for line in results.read_text().splitlines()[2:]]
    assert [r["s_to_target"] > 0 for r in versus_rows] == [True] * 2
    # the curve behind it: the target time is its first point, as each run validates once here
    assert all(
        r["s_to_target"] == r["s_by_epoch"][0] and len(r["test_acc_by_epoch"]) == 1 for r in versus_rows
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "bn_gap", "nosuch"], "nosuch"),
        (["--models", "bn_gap", "--overrides", "model.nope=1"], "model.nope"),
    ],
)
def test_bad_models_or_overrides_are_one_usage_line_before_any_measurement(tmp_path, capsys, args, message):
    results = tmp_path / "results.jsonl"
    with pytest.raises(SystemExit) as e:
        throughput.main([*args, "--paths", "a", "--synthetic", "--results", str(results)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not results.exists()
