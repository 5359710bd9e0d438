"""The LightningModule: loss, optimiser, metrics. The network itself is injected (a plain nn.Module)."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def split_metrics(num_classes: int, per_class: bool) -> MetricCollection:
    """Overall accuracy and macro precision/recall/F1; with `per_class`, the same per class too."""
    m: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    }
    if per_class:  # vectors (C,): computed at epoch end and kept off self.log
        m |= {
            "class_acc": MulticlassAccuracy(num_classes, average="none"),
            "class_precision": MulticlassPrecision(num_classes, average="none"),
            "class_recall": MulticlassRecall(num_classes, average="none"),
            "class_f1": MulticlassF1Score(num_classes, average="none"),
        }
    return MetricCollection(m)


class LitClassifier(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Any, scheduler: Any = None, num_classes: int = 10,
                 label_smoothing: float = 0.0, compile: bool = False, channels_last: bool = False):
        super().__init__()
        # the net and the optimiser/scheduler factories are rebuilt from the run's config; keeping them out of the
        # checkpoint's hparams leaves only plain values there, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # one metric object per split (states must not mix between train/val/test)
        self.val_metrics = split_metrics(num_classes, per_class=True).clone(prefix="val/")
        self.test_metrics = split_metrics(num_classes, per_class=True).clone(prefix="test/")
        self.val_confmat = MulticlassConfusionMatrix(num_classes)
        self.test_confmat = MulticlassConfusionMatrix(num_classes)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()  # training sums: on_train_epoch_start
        self.val_acc_best = MaxMetric()
        self.best_val_epoch = -1
        # filled at epoch end for callbacks / the report: plain tensors on the CPU
        self.last_val: dict[str, torch.Tensor] = {}
        self.test_results: dict[str, torch.Tensor] = {}
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (probs, targets) per batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def on_train_start(self) -> None:
        # the sanity check ran validation already: forget it so val/acc_best is from real epochs only
        self.val_loss.reset()
        self.val_metrics.reset()
        self.val_confmat.reset()
        self.val_acc_best.reset()
        if getattr(self, "_restored_best", None) is not None:
            self.val_acc_best.update(torch.tensor(self._restored_best, device=self.device))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], train: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x).float()
        # label smoothing shapes the training loss only; val/test losses are plain cross-entropy, comparable
        # across runs whatever their smoothing
        loss = self.criterion(logits, y) if train else nn.functional.cross_entropy(logits, y)
        return loss, logits, y

    def on_train_epoch_start(self) -> None:
        # running sums on the device, (3,): loss x images, correct predictions, images
        self._train_sums = torch.zeros(3, device=self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch, train=True)
        # Per step: three tensor adds, no self.log, no metric-object bookkeeping, no .item() (no device sync).
        # Values are logged once per epoch (on_train_epoch_end); the progress bar shows them then.
        with torch.no_grad():
            correct = (logits.argmax(1) == y).sum()
            self._train_sums += torch.stack([loss.detach().float() * len(y), correct.float(),
                                             torch.tensor(float(len(y)), device=loss.device)])
        return loss

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, n = self._train_sums
        self.log("train/loss", loss_sum / n, prog_bar=True, sync_dist=True)
        self.log("train/acc", correct / n, prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.val_loss(loss)
        self.val_metrics.update(logits, y)
        self.val_confmat.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/acc", values["val/acc"], prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if v.ndim == 0 and k != "val/acc"})
        if not self.trainer.sanity_checking:
            acc = values["val/acc"]
            if self.best_val_epoch < 0 or acc > self.val_acc_best.compute():
                self.best_val_epoch = self.current_epoch
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        self.last_val = {k: v.detach().cpu() for k, v in values.items()}
        self.last_val["confmat"] = self.val_confmat.compute().cpu()
        self.val_confmat.reset()

    # metric states are not in the state_dict: carry the best-so-far through checkpoints so a resumed run
    # reports the true best validation accuracy and its epoch
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.best_val_epoch >= 0:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        checkpoint["best_val_epoch"] = self.best_val_epoch

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_epoch = checkpoint.get("best_val_epoch", -1)
        self._restored_best = checkpoint.get("val_acc_best")

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.test_loss(loss)
        self.test_metrics.update(logits, y)
        self.test_confmat.update(logits, y)
        self.test_outputs.append((logits.softmax(-1).cpu(), y.cpu()))

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log("test/loss", self.test_loss.compute())
        self.test_loss.reset()
        self.log_dict({k: v for k, v in values.items() if v.ndim == 0})
        self.test_results = {k: v.detach().cpu() for k, v in values.items()}
        self.test_results["test/loss"] = self.trainer.callback_metrics["test/loss"].detach().cpu()
        self.test_results["confmat"] = self.test_confmat.compute().cpu()
        self.test_confmat.reset()
        if self.trainer.world_size > 1:
            self.test_outputs = self._gather_test_outputs()

    def _gather_test_outputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """DDP: rank 0 gets the whole test set as one (probs, targets) pair, in the dataset's order; other ranks
        get []. Rank r evaluated items r, r + W, r + 2W, ... (strided, unpadded, so shard sizes may differ by
        one): all_gather_object takes uneven shards, and interleaving restores the order."""
        local = [torch.cat(t) if t else torch.empty(0) for t in zip(*self.test_outputs)] or [torch.empty(0)] * 2
        shards = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(shards, local)
        if not self.trainer.is_global_zero:
            return []
        world, n = len(shards), sum(len(p) for p, _ in shards)
        probs = torch.empty(n, shards[0][0].shape[-1]) if n else torch.empty(0)
        targets = torch.empty(n, dtype=torch.long)
        for r, (p, y) in enumerate(shards):
            probs[r::world], targets[r::world] = p, y
        return [(probs, targets)]

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).float().softmax(-1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_fn(params=self.parameters())
        if self.scheduler_fn is None:
            return {"optimizer": optimizer}
        sched_fn = self.scheduler_fn
        kwargs = {}
        # per-step schedules (OneCycle) need the run's length, known only once the trainer exists
        if "total_steps" in inspect.signature(sched_fn.func).parameters:
            kwargs["total_steps"] = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = sched_fn(optimizer=optimizer, **kwargs)
        interval = "step" if kwargs else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval,
                                                         "monitor": "val/loss"}}
