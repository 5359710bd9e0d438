"""TensorBoard laid out for people: it opens on the learning curves, each run is named after what makes it
different, and the HParams tab leads with the results.

TensorBoard's Time Series tab groups tags by their first `/` segment, sorts the groups by name and opens the first
two. The learning curves are `train/*` (the loss every `trainer.log_every_n_steps` steps, the learning rate, epoch
means) and `val/*` (per epoch). So that they are those two:
- `test/*`, the final test numbers (one point each; the HParams tab shows them), go to `verdict/test_*`, which
  sorts after them;
- LearningRateMonitor's `lr-<optimizer>` joins the curves as `train/lr`;
- Lightning's `epoch` counter is not written (TensorBoard's x-axis is the step; csv/metrics.csv keeps it).
Other keys are unchanged, and the CSV log keeps every original name.

HParams (`hparams_summaries`): without an experiment summary TensorBoard would offer every scalar as a metric
column, in name order, and show the first five: `train/*`. The summary written here lists the results first
(RESULTS) and marks the settings a run or sweep varies, which TensorBoard then shows first. Each run is a trial
named by those settings (`trial_name`), not by its folder path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from omegaconf import OmegaConf

# sorts after train/ and val/ (TensorBoard compares tags character by character)
FINAL_GROUP = "verdict"


def tb_tag(key: str) -> str | None:
    """The TensorBoard tag of a logged key (None: not written), as the module docstring says."""
    if key == "epoch":
        return None
    if key.startswith("lr-"):
        return "train/lr"
    if key.startswith("test/"):
        return f"{FINAL_GROUP}/test_{key[len('test/') :]}"
    return key


# HParams metric columns, in TensorBoard's order (it shows the first five): (tag, column title)
RESULTS = (
    ("val/acc_best", "best val acc"),
    (f"{FINAL_GROUP}/test_acc", "test acc"),
    (f"{FINAL_GROUP}/test_loss", "test loss"),
    (f"{FINAL_GROUP}/test_f1", "test f1 (macro)"),
    ("val/acc", "last val acc"),
    ("train/acc", "last train acc"),
    ("val/loss", "last val loss"),
)

# keys that do not change what is trained: never in a run's name or its HParams columns (prefixes)
PLUMBING = ("threads", "ckpt_path", "data.root", "data.download", "data.check_md5", "data.num_workers",
            "data.train_csv", "data.test_csv", "data.keep_on_device", "data.eval_batch_size", "report.",
            "callbacks.", "logger", "paths.", "trainer.accelerator", "trainer.devices", "trainer.enable_",
            "trainer.log_every_n_steps", "trainer.num_sanity_val_steps", "optimized_metric")  # fmt: skip


def _pairs(overrides: list[str]) -> dict[str, str]:
    # `+`/`~` prefixes dropped; a key given twice: the last value wins
    return dict(o.lstrip("+~").partition("=")[::2] for o in overrides)


def run_overrides() -> list[tuple[str, str]]:
    """(key, value) of each command-line override of this Hydra job that changes what is trained, in command-line
    order; none outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 (no Hydra job: tests, notebooks)
        return []
    return [(k, v) for k, v in _pairs(task).items() if not k.startswith(PLUMBING)]


def varying_overrides() -> list[tuple[str, str]]:
    """run_overrides() less those every job of this job's sweep shares (`trainer.max_epochs=2` in
    `-m model=mlp,cnn trainer.max_epochs=2`): what tells the jobs apart. A single run: all of them."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    own = run_overrides()
    try:
        hydra = HydraConfig.get()
        # the sweep's command line, recorded in its folder before the first job (Hydra; fmnist_lit/cli.py)
        record = Path(hydra.sweep.dir) / "multirun.yaml"
        shared = (
            _pairs(list(OmegaConf.load(record).hydra.overrides.task))
            if hydra.mode == RunMode.MULTIRUN
            else {}
        )
    except Exception:  # noqa: BLE001 (no Hydra job, or no record of the sweep: nothing is shared)
        return own
    return [(k, v) for k, v in own if shared.get(k) != v] or own


def run_label() -> str:
    """The run's name: what makes it different (`experiment=fast`; `model=mlp,seed=1` in a sweep), or
    `defaults`."""
    label = ",".join(f"{k}={v}" for k, v in varying_overrides())
    # one folder level
    return (label or "defaults").replace("/", "_")[:120]


def trial_name(run_dir: str | Path) -> str:
    """The HParams trial of a run: its label, then the end of its folder path, which keeps two runs of the same
    command apart (TensorBoard would merge trials of one name into one row)."""
    run_dir = Path(run_dir)
    return f"{run_label()} ({run_dir.parent.name}/{run_dir.name})"


def hparams_summaries(params: dict[str, str | float], differs: set[str], trial: str) -> list[Any]:
    """TensorBoard's HParams records of one run: the experiment (the `params` columns, `differs` first, then the
    RESULTS columns), the trial's values, and its end. `params`: text or float values (TensorBoard prints every
    number with 5 significant digits, so whole numbers are best given as text)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    def summary(tag: str, **data: Any) -> Summary:
        content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
        plugin = SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
        )
        return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])

    string, number = api_pb2.DataType.Value("DATA_TYPE_STRING"), api_pb2.DataType.Value("DATA_TYPE_FLOAT64")
    experiment = api_pb2.Experiment(
        hparam_infos=[
            api_pb2.HParamInfo(name=k, type=string if isinstance(v, str) else number, differs=k in differs)
            for k, v in params.items()
        ],
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title) for tag, title in RESULTS
        ],
    )
    start = plugin_data_pb2.SessionStartInfo(group_name=trial, start_time_secs=time.time())
    for k, v in params.items():
        if isinstance(v, str):
            start.hparams[k].string_value = v
        else:
            start.hparams[k].number_value = v
    end = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.Status.Value("STATUS_SUCCESS"), end_time_secs=time.time()
    )
    return [
        summary(metadata.EXPERIMENT_TAG, experiment=experiment),
        summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
        summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoardLogger with tags arranged by `tb_tag` and the run named by `run_label` when
    `version` is None: `<save_dir>/<name>/<label>/`, so `tensorboard --logdir outputs/` lists
    `<date>/<time>/tensorboard/experiment=fast` instead of a column of runs all called `tensorboard`."""

    def __init__(
        self, save_dir: str, name: str = "tensorboard", version: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(save_dir, name=name, version=run_label() if version is None else version, **kwargs)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        tags = {k: tb_tag(k) for k in metrics}
        super().log_metrics({tags[k]: v for k, v in metrics.items() if tags[k] is not None}, step)


class CSVLogger(_CSVLogger):
    """Lightning's CSVLogger with the `epoch` column counted from 1, as the console, checkpoint names, metrics.json
    and the report count (Lightning's counter starts at 0). The final test's row (`test/*`, logged after training,
    when Lightning's counter holds the number of epochs run) keeps that number: the last epoch."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if "epoch" in metrics and not any(k.startswith("test/") for k in metrics):
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        super().log_metrics(metrics, step)
