"""MLflow experiment tracking (`logger=mlflow`): a local SQLite store, no server.

During the run Lightning's MLFlowLogger records the curves TensorBoard shows (`train/*` every
`trainer.log_every_n_steps` steps, `val/*` per epoch, the learning rate), and the TensorBoardReport callback the
swept settings as params (fmnist_lit/tensorboard_report.py). After the test, `publish_results` adds what the run
folder holds: the numbers of `metrics.json` as metrics, and `config.yaml`, `metrics.json`, `report/` and the
selected checkpoint as artifacts, laid out as in the run folder, so a downloaded run works with `eval.py` and
`predict.py`.

Each run is named after its overrides, as in TensorBoard (loggers.run_label); a sweep (`-m`) is one experiment named
after its folder (`outputs/multirun/<date>/<time>`), single runs share `experiment_name`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from omegaconf import OmegaConf

from fmnist_lit.loggers import run_label
from fmnist_lit.utils import UserError

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
# the URI schemes MLflow keeps runs in ("": a plain folder; databases may name a driver: postgresql+psycopg2)
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks", "")
# metrics.json entries not sent as metrics: settings (seed is a param already) and the per-class numbers (40 more
# columns), which stay in the metrics.json artifact
NOT_METRICS = ("per_class", "seed", "max_epochs", "threads")


def check_config(cfg: Any) -> None:
    """`logger.mlflow.tracking_uri` is a store MLflow knows: train.py checks it before the run folder is made
    (MLflow's own refusal comes when the logger is built, after that)."""
    settings = (cfg.get("logger") or {}).get("mlflow")
    # the default (sqlite under ${hydra:runtime.cwd}) may not resolve yet where this is called
    if not settings or OmegaConf.is_interpolation(settings, "tracking_uri"):
        return
    uri = str(settings.get("tracking_uri") or "")
    if urlparse(uri).scheme.split("+")[0] not in SCHEMES:
        raise UserError(
            f"logger.mlflow.tracking_uri={uri}: not a store MLflow knows; use sqlite:///path/to/mlflow.db, "
            f"a server's http(s)://host:port, or a database URI ({', '.join(SCHEMES[1:4])})"
        )


def sweep_folder() -> str | None:
    """The sweep folder of this Hydra job (`outputs/multirun/<date>/<time>`), None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def artifact_root(tracking_uri: str) -> str | None:
    """`mlartifacts/` beside a SQLite store (as a file URI), so that the store and its files stay together under
    `outputs/`; None for any other store (a server keeps its own artifact root)."""
    if not tracking_uri.startswith(SQLITE):
        return None
    # sqlite:///rel/path.db is relative to the working directory, sqlite:////abs/path.db absolute
    return (Path(tracking_uri[len(SQLITE) :]).resolve().parent / "mlartifacts").as_uri()


class MLFlowLogger(_MLFlowLogger):
    """Lightning's MLFlowLogger named and grouped as the module docstring says.

    `run_name` None: the run's overrides. `group_sweeps`: a multirun's jobs go to one experiment named after the
    sweep folder instead of `experiment_name`. `artifact_location` None: `artifact_root(tracking_uri)`; it applies
    when this logger creates the experiment (an existing one keeps its own)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        group_sweeps: bool = True,
        run_name: str | None = None,
        artifact_location: str | None = None,
        **kwargs: Any,
    ) -> None:
        sweep = sweep_folder() if group_sweeps else None
        super().__init__(
            experiment_name=sweep or experiment_name,
            run_name=run_label() if run_name is None else run_name,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location or artifact_root(tracking_uri),
            **kwargs,
        )


def final_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of metrics.json, nested keys joined with `/` (`calibration/test_ece_after`), except
    NOT_METRICS; lists (the confusion matrix), strings and booleans are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key in NOT_METRICS:
            continue
        if isinstance(value, dict):
            flat |= final_metrics(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def publish_results(loggers: list, metrics: dict[str, Any], out: Path) -> None:
    """Send a finished run's results to each MLflow logger in `loggers` (others are skipped): the numbers of
    `metrics` (metrics.json) at the run's last step, then `config.yaml`, `metrics.json`, `report/` and the tested
    checkpoint with its `calibration.json`, from the run folder `out`. Call on rank 0, after metrics.json and
    report/ are written."""
    for logger in loggers:
        if not isinstance(logger, _MLFlowLogger):
            continue
        logger.log_metrics(final_metrics(metrics), step=metrics.get("global_steps"))
        client, run_id = logger.experiment, logger.run_id
        for name in ("config.yaml", "metrics.json"):
            if (out / name).is_file():
                client.log_artifact(run_id, str(out / name))
        if (out / "report").is_dir():
            client.log_artifacts(run_id, str(out / "report"), "report")
        ckpt = metrics.get("best_checkpoint")
        if ckpt:
            # the checkpoint and, when one was fitted, its temperature (predict.py reads it beside the checkpoint)
            for path in (Path(ckpt), Path(ckpt).parent / "calibration.json"):
                if path.is_file():
                    client.log_artifact(run_id, str(path), "checkpoints")
        log.info("MLflow: results of run %s sent to %s", run_id, client.tracking_uri)
