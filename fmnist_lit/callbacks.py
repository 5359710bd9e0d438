"""TensorBoard side of the report, and the opt-in test-set evaluation after every validation epoch.

TensorBoard gets: the validation confusion matrix every epoch (IMAGES tab), PR curves at test time
(PR CURVES), hyper-parameters with the final test metrics (HPARAMS), a predictions grid and the model graph.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from fmnist_lit import plots
from fmnist_lit.data import CLASSES
from fmnist_lit.report import TEST_EACH_EPOCH_LOSS

log = logging.getLogger(__name__)


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _flat_hparams(pl_module: L.LightningModule, trainer: L.Trainer) -> dict[str, Any]:
    """Scalar hyper-parameters for the HParams tab (TensorBoard takes numbers, strings and bools only)."""
    params: dict[str, Any] = {f"model/{k}": v for k, v in pl_module.hparams.items()}
    dm = trainer.datamodule
    if dm is not None:
        params |= {f"data/{k}": v for k, v in dm.hparams.items()}
    net = getattr(pl_module, "net", None)
    if net is not None:
        params["model/net"] = type(getattr(net, "_orig_mod", net)).__name__
        params["model/params"] = sum(p.numel() for p in net.parameters())
    for name in ("optimizer_fn", "scheduler_fn"):
        fn = getattr(pl_module, name, None)  # functools.partial from Hydra's `_partial_`
        if fn is not None:
            params[f"{name[:-3]}/name"] = fn.func.__name__
            params |= {f"{name[:-3]}/{k}": v for k, v in fn.keywords.items()}
    params |= {"trainer/max_epochs": trainer.max_epochs, "trainer/precision": str(trainer.precision)}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


class ReportCallback(L.Callback):
    """`test_each_epoch`: after each validation epoch also evaluate the official test set and log
    `test_each_epoch/{loss,acc}` (for val_test_loss.png). Those keys are never monitored: checkpoint selection and
    early stopping stay on val/*; the extra pass runs in eval mode with no randomness, so training is unchanged."""

    def __init__(self, test_each_epoch: bool = False, graph: bool = True):
        self.test_each_epoch = test_each_epoch
        self.graph = graph

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tb = _tensorboard(trainer)
        if tb is None or not self.graph or not trainer.is_global_zero:
            return
        try:  # trace a copy in eval mode: the real net's BN statistics and the RNG are left alone
            net = copy.deepcopy(getattr(pl_module.net, "_orig_mod", pl_module.net)).float().cpu().eval()
            with warnings.catch_warnings():  # torch.jit.trace's deprecation notice, once per run
                warnings.simplefilter("ignore", FutureWarning)
                tb.experiment.add_graph(net, torch.zeros(1, 1, 28, 28))
        # tracing is best effort (some layers do not trace): never fail a run for it
        except Exception as e:  # noqa: BLE001
            log.warning("model graph not logged to TensorBoard: %s", str(e).splitlines()[0] if str(e) else e)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.test_each_epoch or trainer.sanity_checking or trainer.datamodule is None:
            return
        dm = trainer.datamodule
        loss_sum, correct, n = 0.0, 0, 0
        bs = dm.hparams.get("eval_batch_size", 1000)
        for i in range(0, len(dm.test_x), bs):
            batch = (dm.test_x[i:i + bs].to(pl_module.device), dm.test_y[i:i + bs].to(pl_module.device))
            batch = dm.on_after_batch_transfer(batch, 0)  # normalise (+ channels_last); no augmentation outside fit
            with trainer.precision_plugin.val_step_context():
                loss, logits, y = pl_module._step(batch)
            loss_sum += float(loss) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        pl_module.log(TEST_EACH_EPOCH_LOSS, loss_sum / n)
        pl_module.log("test_each_epoch/acc", correct / n)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's on_validation_epoch_end (callback epoch-end hooks run before the module's)
        tb = _tensorboard(trainer)
        cm = getattr(pl_module, "last_val", {}).get("confmat")
        if tb is None or cm is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        fig = plots.confusion_matrix_figure(cm, CLASSES, f"Validation confusion matrix, epoch {trainer.current_epoch}")
        tb.experiment.add_figure("val/confusion_matrix", fig, global_step=trainer.current_epoch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tb = _tensorboard(trainer)
        outputs = getattr(pl_module, "test_outputs", None)
        if tb is None or not outputs or not trainer.is_global_zero:
            return
        probs = torch.cat([p for p, _ in outputs]).float()
        target = torch.cat([y for _, y in outputs])
        step = trainer.global_step
        for k, name in enumerate(CLASSES):
            tb.experiment.add_pr_curve(f"test_pr/{k}_{name}", target == k, probs[:, k], global_step=step)
        self._predictions_grid(tb, trainer, probs, target, step)
        res = pl_module.test_results
        metrics = {f"hp/{k.split('/')[-1]}": float(res[k]) for k in ("test/acc", "test/loss", "test/f1") if k in res}
        best = getattr(pl_module, "val_acc_best", None)
        if best is not None and getattr(pl_module, "best_val_epoch", -1) >= 0:
            metrics["hp/val_acc_best"] = float(best.compute())
        tb.log_hyperparams(_flat_hparams(pl_module, trainer), metrics)
        tb.experiment.flush()

    @staticmethod
    def _predictions_grid(tb: TensorBoardLogger, trainer: L.Trainer, probs: torch.Tensor, target: torch.Tensor,
                          step: int) -> None:
        images = trainer.datamodule.test_x[:32] if trainer.datamodule is not None else None
        if images is None:
            return
        preds = probs[:32].argmax(1)
        titles = [f"pred: {CLASSES[p]}\ntrue: {CLASSES[t]}" for p, t in zip(preds, target[:32])]
        colors = [plots.RIGHT if p == t else plots.WRONG for p, t in zip(preds, target[:32])]
        fig = plots.image_grid(images, titles, "First 32 test images (red = wrong)", colors)
        tb.experiment.add_figure("test/predictions", fig, global_step=step)
