"""TensorBoardReport (`callbacks.report` in conf/callbacks/default.yaml): what a run shows in TensorBoard beside
the logged scalars. The report/ folder is another thing, written after testing by fmnist_lit/report.py.

TensorBoard gets: the validation confusion matrix every epoch (IMAGES tab), the swept hyper-parameters with the final
metrics (HPARAMS), the model graph, and from the test-set predictions PR curves (PR CURVES) and a predictions grid.
MLflow's logger, if any, gets the same hyper-parameters as params when fitting starts. TensorBoard's tag layout, run
names and HParams records: fmnist_lit/loggers.py.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from omegaconf import DictConfig, ListConfig, OmegaConf

from fmnist_lit import plots
from fmnist_lit.arguments import CONF_DIR
from fmnist_lit.data import ImageSet
from fmnist_lit.fashion_mnist import CLASSES
from fmnist_lit.loggers import hparams_summaries, run_overrides, tb_tag, trial_name, varying_overrides

log = logging.getLogger(__name__)


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _scalar(v: Any) -> float | str:
    """TensorBoard's HParams take numbers and strings, and print every number with 5 significant digits (a bool
    would show as 0/1, an int as 2.0000): lists become `[16, 32, 64]`, None `none`, booleans `true`/`false`, whole
    numbers their digits; only non-integral floats stay numbers."""
    if isinstance(v, (DictConfig, ListConfig)):
        v = OmegaConf.to_container(v, resolve=True)
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    return v if isinstance(v, (float, str)) else str(v)


def _column(params: dict[str, Any], key: str) -> str:
    """The HParams column of an overridden key: the declared one it sets (`optimizer.lr`: `optimizer/lr`,
    `trainer.max_epochs`: `max_epochs`), else the key itself."""
    parts = key.split(".")
    return next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in params), key)


def sweep_hparams(declared: Any) -> dict[str, Any]:
    """The HParams row of a run: `declared` (callbacks.report.hparams: name -> value, a mapping value spreads into
    `name/key` columns, `_target_` as its class name), plus every key overridden on the command line that changes
    what is trained (loggers.run_overrides), so that runs of a sweep differ in the columns where they differ."""
    params: dict[str, Any] = {}
    for name, value in (
        OmegaConf.to_container(declared, resolve=True) if declared is not None else {}
    ).items():
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "_target_":
                    params[name] = str(v).rsplit(".", 1)[-1]
                elif k != "_partial_":
                    params[f"{name}/{k}"] = _scalar(v)
        else:
            params[name] = _scalar(value)
    for key, value in run_overrides():
        # model.net.widths is already the column net/widths, data.batch_size batch_size
        params.setdefault(_column(params, key), value)
    return params


def _package(key: str, value: str) -> str:
    """The config path an override sets: for a config group, its option's `# @package` line (conf/model/*.yaml
    set model.net), else the key itself."""
    option = CONF_DIR / key / f"{value}.yaml"
    first = option.read_text().split("\n", 1)[0] if option.is_file() else ""
    return first.removeprefix("# @package").strip() if first.startswith("# @package") else key


def varied_columns(declared: Any, params: dict[str, Any], overrides: list[tuple[str, str]]) -> set[str]:
    """The HParams columns that `overrides` ((key, value): `model`, `optimizer.lr`) set: each key's own column,
    and every column of `declared` (the unresolved callbacks.report.hparams) read from the config path the key
    sets or below it (`model=mlp` sets `net` and `net/hidden` through `net: ${model.net}`)."""
    raw = OmegaConf.to_container(declared, resolve=False) if declared is not None else {}
    # `${model.net}`, `${oc.select:data.augment_pad,0}`, `${hydra:runtime.choices.model}`: the path read
    found = {
        n: re.match(r"\$\{(?:oc\.select:|hydra:runtime\.choices\.)?([\w.]+)", str(v)) for n, v in raw.items()
    }
    sources = {n: m.group(1) for n, m in found.items() if m}
    paths = [_package(k, v) for k, v in overrides]
    columns = {_column(params, k) for k, _ in overrides}
    for column in params:
        name, _, sub = column.partition("/")
        source = ".".join(filter(None, [sources.get(name), sub]))
        if name in sources and any(source == p or source.startswith(f"{p}.") for p in paths):
            columns.add(column)
    return columns


class TensorBoardReport(L.Callback):
    """Writes to the run's TensorBoard logger, if there is one, and the swept settings to MLflow's (rank 0 only)."""

    def __init__(self, graph: bool, hparams: Any = None):
        # `graph=maybe` would otherwise count as true
        if not isinstance(graph, bool):
            raise TypeError(f"graph must be true or false, got {graph!r}")
        self.graph = graph
        # what people sweep (conf/callbacks/default.yaml); see sweep_hparams
        self._hparams = hparams
        self._probs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # MLflow shows a run's params while it trains (TensorBoard gets them with the final metrics, once the test
        # set is predicted)
        for lg in trainer.loggers:
            if isinstance(lg, MLFlowLogger):
                lg.log_hyperparams(sweep_hparams(self._hparams))
        tb = _tensorboard(trainer)
        if tb is None or not self.graph or not trainer.is_global_zero:
            return
        try:
            # trace a copy in eval mode: the real net's BN statistics and the RNG are left alone
            net = copy.deepcopy(getattr(pl_module.net, "_orig_mod", pl_module.net)).float().cpu().eval()
            # torch.jit.trace's deprecation notice, once per run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                tb.experiment.add_graph(net, torch.zeros(1, 1, 28, 28))
        # tracing is best effort (some layers do not trace): never fail a run for it
        except Exception as e:  # noqa: BLE001
            log.warning("model graph not logged to TensorBoard: %s", str(e).splitlines()[0] if str(e) else e)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs before the module's hook, which resets the matrix; compute() syncs ranks, so every rank calls it
        if (
            trainer.sanity_checking
            or _tensorboard(trainer) is None
            or not pl_module.val_confmat.update_called
        ):
            return
        cm = pl_module.val_confmat.compute().cpu()
        if trainer.is_global_zero:
            # epochs count from 1 wherever people read them
            epoch = trainer.current_epoch + 1
            fig = plots.confusion_matrix_figure(cm, CLASSES, f"Validation confusion matrix, epoch {epoch}")
            _tensorboard(trainer).experiment.add_figure("val/confusion_matrix", fig, global_step=epoch)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probs, self._targets = [], []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            # predict_step gives logits
            self._probs.append(outputs.float().softmax(-1).cpu())
            self._targets.append(batch[1].cpu())

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tb, dm = _tensorboard(trainer), trainer.datamodule
        # other images than the test set (calibration's validation split, robustness's corrupted test images)
        test_set = dm is not None and not isinstance(dm, ImageSet)
        if tb is None or not trainer.is_global_zero or not self._probs or not test_set:
            self._probs, self._targets = [], []
            return
        self._log_hparams(tb)
        probs, target = torch.cat(self._probs), torch.cat(self._targets)
        step = trainer.global_step
        for k, name in enumerate(CLASSES):
            tb.experiment.add_pr_curve(f"test_pr/{k}_{name}", target == k, probs[:, k], global_step=step)
        preds = probs[:32].argmax(1)
        titles = [f"true: {CLASSES[t]}\npred: {CLASSES[p]}" for p, t in zip(preds, target[:32])]
        colors = [plots.RIGHT if p == t else plots.WRONG for p, t in zip(preds, target[:32])]
        fig = plots.image_grid(
            dm.test_x[:32], titles, "First 32 test images: true and predicted class (red = wrong)", colors
        )
        tb.experiment.add_figure(tb_tag("test/predictions"), fig, global_step=step)
        tb.experiment.flush()
        self._probs, self._targets = [], []

    def _log_hparams(self, tb: TensorBoardLogger) -> None:
        """The HParams tab's row of this run, once its test set is predicted (assess.log_test_metrics then logs
        the `test/*` scalars its columns read)."""
        # the results' columns first, then the settings this run (or its sweep) varies: fmnist_lit/loggers.py;
        # the metric values are the scalars already logged, so nothing is logged twice
        params = sweep_hparams(self._hparams)
        # where each declared column reads its value: Hydra's record of the config before it was resolved
        record = Path(tb.save_dir) / ".hydra" / "config.yaml"
        declared = (
            OmegaConf.select(OmegaConf.load(record), "callbacks.report.hparams") if record.is_file() else None
        )
        differs = varied_columns(declared, params, varying_overrides())
        # as Lightning's own log_hyperparams writes them
        writer = tb.experiment._get_file_writer()
        for summary in hparams_summaries(params, differs, trial_name(tb.save_dir)):
            writer.add_summary(summary)
