"""The evaluation report: report/ after a run, TensorBoard content, eval.py, test-each-epoch isolation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from fmnist_lit.evaluate import evaluate
from fmnist_lit.report import classification_report
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import compose_cfg, eval_cfg, run_script

REPORT_FILES = [
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "classification_report.md",
    "classification_report.json",
    "curves.png",
    "pr_curves.png",
    "samples.png",
    "predictions.png",
    "misclassified.png",
    "model_summary.txt",
    "architecture.png",
    "report.md",
]
RUN = ["model=simple_cnn", "trainer.max_epochs=2", "seed=0", "scheduler=null", "trainer.log_every_n_steps=5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_root) -> dict[bool, tuple[Path, dict]]:
    """The same seeded tiny run twice: report.test_each_epoch false and true."""
    out = {}
    for flag in (False, True):
        d = tmp_path_factory.mktemp(f"tee_{flag}")
        out[flag] = d, run(compose_cfg(d, tiny_root, [*RUN, f"report.test_each_epoch={str(flag).lower()}"]))
    return out


def _check_report(rep: Path) -> None:
    for name in REPORT_FILES:
        assert (rep / name).is_file(), name
        if name.endswith(".png"):
            img = mpimg.imread(rep / name)
            assert img.ndim == 3 and 200 <= img.shape[0] <= 4000 and 300 <= img.shape[1] <= 4000, (
                name,
                img.shape,
            )
    data = json.loads((rep / "classification_report.json").read_text())
    assert set(data) == {"classes", "accuracy", "macro avg", "weighted avg"} and len(data["classes"]) == 10
    page = (rep / "report.md").read_text()
    for name in REPORT_FILES:
        if name != "report.md":
            assert f"({name})" in page, f"report.md does not link {name}"


def test_report_files_after_tiny_run(runs):
    run_dir, m = runs[False]
    _check_report(run_dir / "report")
    # opt-in only
    assert not (run_dir / "report" / "val_test_loss.png").exists()
    assert m["command"] in (run_dir / "report" / "report.md").read_text()
    rows = (run_dir / "report" / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].endswith("Ankle boot")
    # every test image once
    assert sum(int(v) for r in rows[1:] for v in r.split(",")[1:]) == 200


def test_tensorboard_has_report_content(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    (tb_dir,) = {p.parent for p in (runs[False][0] / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert "val/confusion_matrix" in images and "verdict/test_predictions" in images
    # one per validation epoch, from 1
    assert [e.step for e in acc.Images("val/confusion_matrix")] == [1, 2]
    # PR curves
    pr = [t for t in acc.Tags()["tensors"] if t.startswith("test_pr/")]
    assert pr
    # drawn for the test set only: not again for the calibration's predictions on the validation split
    assert len(acc.Images("verdict/test_predictions")) == 1 and all(len(acc.Tensors(t)) == 1 for t in pr)
    assert acc.Tags()["graph"]
    # the learning curves open TensorBoard: train/ and val/ first; final numbers under verdict/, no `epoch`
    scalars = set(acc.Tags()["scalars"])
    assert {
        "train/loss_step",
        "train/lr",
        "train/loss",
        "train/ce",
        "train/acc",
        "val/loss",
        "val/acc",
    } <= scalars
    assert (
        "verdict/test_acc" in scalars
        and "epoch" not in scalars
        and not any(t.startswith("hp") for t in scalars)
    )
    assert sorted({t.split("/")[0] for t in scalars})[:2] == ["train", "val"]
    # HParams: the swept settings, not plumbing; metrics are the run's own tags
    meta = acc.summary_metadata
    info = plugin_data_pb2.HParamsPluginData.FromString(
        meta["_hparams_/session_start_info"].plugin_data.content
    )
    hp = info.session_start_info.hparams
    assert hp["model"].string_value == "simple_cnn" and hp["optimizer/lr"].number_value > 0
    assert hp["scheduler"].string_value == "none" and "net/widths" in hp
    assert not {"data.root", "data.check_md5", "threads", "root"} & set(hp)
    # the experiment summary puts the results first (tests/test_tensorboard.py)
    assert "_hparams_/experiment" in meta


def test_test_each_epoch_never_changes_selection(runs):
    (d0, m0), (d1, m1) = runs[False], runs[True]
    assert Path(m0["best_checkpoint"]).name == Path(m1["best_checkpoint"]).name
    assert (m0["best_epoch"], m0["test_acc"], m0["test_loss"]) == (
        m1["best_epoch"],
        m1["test_acc"],
        m1["test_loss"],
    )
    w0 = torch.load(d0 / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w1 = torch.load(d1 / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # training itself is untouched
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    header = (d1 / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert (
        "test_each_epoch/loss" in header
        and "test_each_epoch/loss" not in (d0 / "csv" / "metrics.csv").read_text()
    )
    assert (d1 / "report" / "val_test_loss.png").is_file()


def test_classification_report_matches_hand_computation():
    # confusion matrix (rows true, columns predicted): [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    cm = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    target = torch.tensor([i for i, row in enumerate(cm) for j, n in enumerate(row) for _ in range(n)])
    preds = torch.tensor([j for i, row in enumerate(cm) for j, n in enumerate(row) for _ in range(n)])
    rep = classification_report(preds, target, ["a", "b", "c"])
    p, r, s = [5 / 7, 3 / 4, 4 / 5], [5 / 6, 3 / 6, 4 / 4], [6, 6, 4]
    f = [2 * pi * ri / (pi + ri) for pi, ri in zip(p, r)]
    for k, name in enumerate("abc"):
        got = rep["classes"][name]
        assert got["precision"] == pytest.approx(p[k]) and got["recall"] == pytest.approx(r[k])
        assert got["f1"] == pytest.approx(f[k]) and got["support"] == s[k]
    assert rep["accuracy"] == pytest.approx(12 / 16)
    assert rep["macro avg"]["f1"] == pytest.approx(sum(f) / 3)
    assert rep["weighted avg"]["precision"] == pytest.approx(sum(pi * si for pi, si in zip(p, s)) / 16)
    # weighted recall is accuracy
    assert rep["weighted avg"]["recall"] == pytest.approx(12 / 16)


def eval_cli(tmp_path: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("eval.py", f"data.root={root}", "threads=1", *args, cwd=tmp_path)


def test_eval_reproduces_test_accuracy(runs, tmp_path, tiny_root):
    run_dir, m = runs[False]
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    e = evaluate(eval_cfg(tmp_path, tiny_root, Path(m["best_checkpoint"])))
    # the run's recorded precision, not decided again
    assert e["precision"] == m["precision"]
    assert e["test_acc"] == m["test_acc"] and e["test_loss"] == pytest.approx(float(m["test_loss"]), abs=1e-6)
    assert e["confusion_matrix"] == m["confusion_matrix"] and e["per_class"] == m["per_class"]
    _check_report(tmp_path / "out" / "report")
    # original run untouched
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_eval_cli_error_is_one_line(tmp_path, tiny_root):
    proc = eval_cli(
        tmp_path, tiny_root, f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'o'}"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"error: ckpt_path={tmp_path / 'missing.ckpt'}: no such file"


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: (d / "notes.ckpt").write_text("not a checkpoint") and d / "notes.ckpt",
            "not a readable PyTorch",
        ),
        (
            lambda d: torch.save({"weights": torch.ones(2)}, d / "plain.ckpt") or d / "plain.ckpt",
            "not a Lightning checkpoint",
        ),
        (lambda d: torch.save({"state_dict": {}}, d / "orphan.ckpt") or d / "orphan.ckpt", "config.yaml"),
    ],
)
def test_eval_rejects_foreign_files(tmp_path, tiny_root, make, message):
    with pytest.raises(UserError, match=message):
        evaluate(eval_cfg(tmp_path, tiny_root, make(tmp_path)))


def test_eval_rejects_foreign_weights(runs, tmp_path, tiny_root):
    fake = tmp_path / "run"
    (fake / "checkpoints").mkdir(parents=True)
    (fake / "config.yaml").write_text((runs[False][0] / "config.yaml").read_text())
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(3, 3)}}, fake / "checkpoints" / "x.ckpt")
    with pytest.raises(UserError, match="weights do not fit"):
        evaluate(eval_cfg(tmp_path, tiny_root, fake / "checkpoints" / "x.ckpt"))


def test_a_resumed_run_names_the_run_it_continues():
    from fmnist_lit.report_page import report_page

    rep = {"macro avg": {"support": 10_000, "f1": 0.9}, "classes": {}, "accuracy": 0.9}
    rep |= {"weighted avg": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10_000}}
    rep["macro avg"] |= {"precision": 0.9, "recall": 0.9}
    page = report_page({"test_acc": 0.9, "resumed_from": "/r/run1/checkpoints/last.ckpt"}, rep, {}, 0.9)
    assert "Resumed from `/r/run1/checkpoints/last.ckpt`" in page
