"""TensorBoard's HParams tab leads with the results, names each trial after its overrides and prints whole numbers
as such; a sweep's runs are named after what tells them apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fmnist_lit.loggers import run_label, trial_name
from fmnist_lit.train import run
from tests.helpers import compose_cfg


@pytest.fixture(scope="module")
def events(tmp_path_factory, tiny_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path_factory.mktemp("tb") / "run"
    cfg = compose_cfg(out, tiny_root, ["model=mlp", "logger=tensorboard", "report.enabled=false"])
    # Hydra's record of the config before it is resolved, as a run from the command line has it
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    run(cfg)
    (folder,) = {p.parent for p in (out / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _plugin_data(acc, tag: str):
    from tensorboard.plugins.hparams import plugin_data_pb2

    return plugin_data_pb2.HParamsPluginData.FromString(acc.summary_metadata[tag].plugin_data.content)


def test_hparams_columns_lead_with_the_results(events):
    experiment = _plugin_data(events, "_hparams_/experiment").experiment
    metrics = [(m.name.tag, m.display_name) for m in experiment.metric_infos]
    # TensorBoard shows the first five metric columns, in this order
    assert metrics[:2] == [("val/acc_best", "best val acc"), ("verdict/test_acc", "test acc")]
    # each column is a scalar the run logged, under a name that reads as what it is
    assert {tag for tag, _ in metrics} <= set(events.Tags()["scalars"])
    assert not any(tag.startswith("zz") for tag, _ in metrics)


def test_hparams_trial_is_named_after_its_overrides_with_whole_numbers(events):
    start = _plugin_data(events, "_hparams_/session_start_info").session_start_info
    # compose_cfg's overrides (the run has no Hydra job here): the trial name still ends with the run folder
    assert ",model=mlp (" in start.group_name and start.group_name.endswith("/run)")
    hp = start.hparams
    assert hp["seed"].string_value == "0" and hp["batch_size"].string_value == "32"
    assert hp["max_epochs"].string_value == "1" and hp["optimizer/lr"].number_value > 0
    experiment = _plugin_data(events, "_hparams_/experiment").experiment
    assert {h.name for h in experiment.hparam_infos} == set(hp)
    # what the overrides set comes first (TensorBoard shows five settings): `model=mlp` sets the net's columns too
    differs = {h.name for h in experiment.hparam_infos if h.differs}
    assert {"model", "net", "net/hidden", "max_epochs"} <= differs and "label_smoothing" not in differs


def _hydra(monkeypatch, tmp_path: Path, task: list[str], sweep: list[str] | None) -> None:
    from hydra.types import RunMode

    if sweep is not None:
        OmegaConf.save({"hydra": {"overrides": {"task": sweep}}}, tmp_path / "multirun.yaml")
    hydra = OmegaConf.create(
        {
            "overrides": {"task": task},
            "sweep": {"dir": str(tmp_path)},
            "mode": RunMode.MULTIRUN if sweep is not None else RunMode.RUN,
        }
    )
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.get", staticmethod(lambda: hydra))


def test_a_sweep_job_is_named_after_what_tells_it_apart(monkeypatch, tmp_path):
    job = ["model=mlp", "seed=1", "trainer.max_epochs=2", "threads=1"]
    _hydra(
        monkeypatch, tmp_path, job, ["model=mlp,simple_cnn", "seed=0,1", "trainer.max_epochs=2", "threads=1"]
    )
    assert run_label() == "model=mlp,seed=1"
    assert trial_name(tmp_path / "3") == f"model=mlp,seed=1 ({tmp_path.name}/3)"
    # an Optuna trial's sampled values are not on the sweep's command line: they tell the trials apart
    _hydra(monkeypatch, tmp_path, ["hparams_search=optuna", "optimizer.lr=0.0012"], ["hparams_search=optuna"])
    assert run_label() == "optimizer.lr=0.0012"
    # a single run: every override that changes what is trained
    _hydra(monkeypatch, tmp_path, ["experiment=fast", "trainer.max_epochs=2", "threads=1"], None)
    assert run_label() == "experiment=fast,trainer.max_epochs=2"
