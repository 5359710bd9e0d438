"""TensorBoard laid out for people: it opens on the learning curves, and each run is named after what makes it
different.

TensorBoard groups tags by their first `/` segment and sorts the groups by name, so the first screen shows the
first groups. The learning curves are `train/*` (the loss every `trainer.log_every_n_steps` steps, the learning rate,
epoch means) and `val/*` (per epoch). So that they open TensorBoard:
- `test/*`, the final test numbers (one point each; the HParams tab shows them), go to `zz_final/test_*`, which
  sorts after them;
- LearningRateMonitor's `lr-<optimizer>` joins the curves as `train/lr`;
- Lightning's `epoch` counter is not written (TensorBoard's x-axis is the step; csv/metrics.csv keeps it).
Other keys are unchanged, and the CSV log keeps every original name.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger

LAST_GROUP = "zz_final"  # sorts after train/ and val/ (TensorBoard compares tags character by character)


def tb_tag(key: str) -> str | None:
    """The TensorBoard tag of a logged key (None: not written), as the module docstring says."""
    if key == "epoch":
        return None
    if key.startswith("lr-"):
        return "train/lr"
    if key.startswith("test/"):
        return f"{LAST_GROUP}/test_{key[len('test/') :]}"
    return key


# keys that do not change what is trained: never in a run's name or its HParams columns (prefixes)
PLUMBING = ("threads", "ckpt_path", "data.root", "data.download", "data.check_md5", "data.num_workers",
            "data.train_csv", "data.test_csv", "data.keep_on_device", "data.eval_batch_size", "report.",
            "callbacks.", "logger", "paths.", "trainer.accelerator", "trainer.devices", "trainer.enable_",
            "trainer.log_every_n_steps", "trainer.num_sanity_val_steps", "optimized_metric")  # fmt: skip


def run_overrides() -> list[tuple[str, str]]:
    """(key, value) of each command-line override of this Hydra job that changes what is trained, in command-line
    order (`+`/`~` prefixes dropped); none outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 (no Hydra job: tests, notebooks)
        return []
    pairs = dict(o.lstrip("+~").partition("=")[::2] for o in task)  # a key given twice: the last value wins
    return [(k, v) for k, v in pairs.items() if not k.startswith(PLUMBING)]


def run_label() -> str:
    """The run's name: its overrides (`experiment=fast`, `model=mlp,seed=1`), or `defaults`."""
    label = ",".join(f"{k}={v}" for k, v in run_overrides())
    return (label or "defaults").replace("/", "_")[:120]  # one folder level


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
