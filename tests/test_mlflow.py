"""logger=mlflow: a tiny run recorded in a temporary SQLite store, read back with MLflow's client (no server)."""

import json
from pathlib import Path

import mlflow
import pytest

from fmnist_lit.tracking import artifact_root, check_config, final_metrics
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import TINY, compose_cfg, run_script


def store(tmp_path: Path) -> tuple[str, "mlflow.MlflowClient"]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, mlflow.MlflowClient(uri)


def only_run(client, experiment: str):
    (found,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return found


def test_run_is_recorded(tmp_path, tiny_root):
    uri, client = store(tmp_path)
    out = tmp_path / "run"
    cfg = compose_cfg(
        out,
        tiny_root,
        ["model=mlp", "trainer.max_epochs=2", "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}"],
    )
    # a list of options composes both
    assert set(cfg.logger) == {"csv", "mlflow"}
    # train.py sends the results (tracking.publish_results) after report/ is written
    metrics = run(cfg)

    found = only_run(client, "fmnist-lit")
    assert found.info.status == "FINISHED"
    # named after the overrides that change what is trained, like TensorBoard's runs (no logger.*, threads)
    assert "model=mlp" in found.info.run_name and "trainer.max_epochs=2" in found.info.run_name
    assert "logger" not in found.info.run_name and "threads" not in found.info.run_name
    assert found.data.tags["run_dir"] == str(out)
    # params: the TensorBoard HParams columns (tensorboard_report.sweep_hparams)
    params = found.data.params
    assert params["model"] == "mlp" and params["optimizer/lr"] == "0.002" and params["seed"] == "0"
    assert params["batch_size"] == "32" and params["max_epochs"] == "2"
    # validation curves: one point per epoch, at the step the epoch ended
    val = client.get_metric_history(found.info.run_id, "val/acc")
    # 16 batches of 32 per epoch
    assert [m.step for m in val] == [15, 31]
    assert len(client.get_metric_history(found.info.run_id, "train/loss")) == 2
    # metrics.json's numbers (per-class numbers and settings left out)
    logged = found.data.metrics
    assert logged["test_acc"] == pytest.approx(metrics["test_acc"])
    assert logged["val_acc_best"] == pytest.approx(metrics["val_acc_best"])
    assert logged["calibration/test_ece_after"] == pytest.approx(metrics["calibration"]["test_ece_after"])
    assert not any(k.startswith("per_class") for k in logged) and "threads" not in logged
    # the run folder's files, laid out as there: config.yaml, report/, the tested checkpoint
    ckpt = Path(metrics["best_checkpoint"])
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "metrics.json", "report", "checkpoints"} <= names
    assert "report/report.md" in {a.path for a in client.list_artifacts(found.info.run_id, "report")}
    got = Path(client.download_artifacts(found.info.run_id, "", str(tmp_path / "got")))
    assert (got / "config.yaml").read_bytes() == (out / "config.yaml").read_bytes()
    assert (got / "checkpoints" / ckpt.name).read_bytes() == ckpt.read_bytes()
    # beside the store, not in the working directory
    assert (tmp_path / "mlartifacts").is_dir()


def test_final_metrics_are_the_numbers_of_metrics_json():
    metrics = {
        "test_acc": 0.9,
        "best_epoch": 3,
        "calibration": {"test_ece_after": 0.01, "fitted_on": "validation split"},
        "per_class": {"Bag": {"acc": 0.99}},
        "confusion_matrix": [[1]],
        "cut_short": {"limit_train_batches": 20},
        "seed": 0,
        "model": "MLP",
        "flag": True,
    }
    assert final_metrics(metrics) == {
        "test_acc": 0.9,
        "best_epoch": 3,
        "calibration/test_ece_after": 0.01,
        "cut_short/limit_train_batches": 20,
    }


def test_artifacts_sit_beside_a_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_root("sqlite:///outputs/mlflow.db") == (tmp_path / "outputs" / "mlartifacts").as_uri()
    assert artifact_root("sqlite:////srv/x/mlflow.db") == "file:///srv/x/mlartifacts"
    # a server's own artifact root
    assert artifact_root("http://127.0.0.1:5000") is None


@pytest.mark.slow
def test_sweep_is_one_experiment(tmp_path, tiny_root):
    uri, client = store(tmp_path)
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        f"data.root={tiny_root}",
        *TINY,
        "model=mlp",
        "optimizer.lr=0.001,0.003",
        "seed=0,1",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={uri}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == str(sweep)
    runs = client.search_runs([experiment.experiment_id])
    assert len({r.info.run_name for r in runs}) == 4
    assert {(r.data.params["optimizer/lr"], r.data.params["seed"]) for r in runs} == {
        (lr, s) for lr in ("0.001", "0.003") for s in ("0", "1")
    }
    for r in runs:
        m = json.loads((Path(r.data.tags["run_dir"]) / "metrics.json").read_text())
        assert r.data.metrics["test_acc"] == pytest.approx(m["test_acc"])


@pytest.mark.parametrize("uri", ["foo://x", "sqlit:///outputs/mlflow.db"])
def test_an_unknown_store_is_a_user_error(tmp_path, tiny_root, uri):
    cfg = compose_cfg(tmp_path, tiny_root, ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"])
    with pytest.raises(UserError, match=r"^logger\.mlflow\.tracking_uri=.*not a store MLflow knows"):
        check_config(cfg)


@pytest.mark.parametrize("uri", ["sqlite:///m.db", "postgresql+psycopg2://u@h/db", "http://127.0.0.1:5000"])
def test_known_stores_pass(tmp_path, tiny_root, uri):
    check_config(compose_cfg(tmp_path, tiny_root, ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]))
