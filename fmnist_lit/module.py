"""The LightningModule: loss, optimiser, metrics. The network itself is injected (a plain nn.Module)."""

from __future__ import annotations

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

from fmnist_lit import optim
from fmnist_lit.batches import MEAN, STD, normalize_uint8


def split_metrics(num_classes: int) -> MetricCollection:
    """Overall accuracy and macro precision/recall/F1 (per-class numbers come from the report's predictions)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


class LitClassifier(L.LightningModule):
    """Loss, optimiser and metrics around an injected net. Settings come from conf/train.yaml's `model:`.

    Validation may have a second dataloader (`report.test_each_epoch=true`): the official test set, logged as
    `test_each_epoch/*` for the report's curves only (checkpoint selection and early stopping monitor val/*).
    `tta_flip`, `tta_shift`: evaluation logits averaged over several views of each image (`eval_logits`).
    `bias_lr_mult`: BatchNorm parameters and biases learn at this multiple of the LR (a second parameter group,
    fmnist_lit/optim.py). A net with an `init_from_data(x)` method (models.SpeedNet's whitening stem) gets the
    training images once when fitting starts.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        scheduler: Any,
        label_smoothing: float,
        compile: bool,
        channels_last: bool,
        tta_flip: bool,
        tta_shift: int,
        bias_lr_mult: float,
        num_classes: int = 10,
    ):
        super().__init__()
        # the net and the optimiser/scheduler factories are rebuilt from the run's config; keeping them out of the
        # checkpoint's hparams leaves only plain values there, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # one metric object per split (states must not mix between train/val/test)
        self.val_metrics = split_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = split_metrics(num_classes).clone(prefix="test/")
        # read by tensorboard_report.TensorBoardReport each epoch
        self.val_confmat = MulticlassConfusionMatrix(num_classes)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_each_epoch_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_each_epoch_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        # the epoch (from 0) of the best val/acc so far; -1 before the first validation epoch
        self.best_val_epoch = -1
        # (N_val, 10) fp32 logits of that epoch's validation pass (one process, kept on CPU): calibration fits its
        # temperature on them instead of predicting the validation split again; None until then
        self.best_val_logits: torch.Tensor | None = None
        self._epoch_val_logits: list[torch.Tensor] = []
        # running sums over the epoch, (4,): loss x images, plain cross-entropy x images, correct, images
        self._train_sums = torch.zeros(4)
        # (loss x images, images) since the last per-step log
        self._window = torch.zeros(2)
        # restored by on_load_checkpoint when resuming: the best val/acc so far, and the horizon in steps the
        # checkpoint's LR schedule was planned for (configure_optimizers refuses a longer run)
        self._restored_best: float | None = None
        self._planned_steps: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _views_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self(x).float()
        if self.hparams.tta_flip:
            logits = (logits + self(x.flip(3)).float()) / 2
        return logits

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) in fp32 for validation/test/predict. `tta_flip`: the mean of the logits of x and of x
        mirrored left-right (only sensible for a net trained with flips: Fashion-MNIST items face one way).
        `tta_shift` = s > 0: half of that, plus a quarter each for x translated by (s, s) and by (-s, -s) pixels
        (airbench's multi-crop TTA), the uncovered border filled with the background (a 0 pixel, normalised)."""
        logits = self._views_logits(x)
        s = self.hparams.tta_shift
        if s:
            h, w = x.shape[-2:]
            background = (0.0 - MEAN) / STD
            padded = nn.functional.pad(x, (s, s, s, s), value=background)
            # (B, 1, H, W) crops of the padded image: content moved down-right, then up-left, by s pixels, in the
            # input's memory format (the net's)
            fmt = torch.channels_last if self.hparams.channels_last else torch.contiguous_format
            down_right = padded[..., :h, :w].contiguous(memory_format=fmt)
            up_left = padded[..., 2 * s :, 2 * s :].contiguous(memory_format=fmt)
            logits = 0.5 * logits + 0.25 * (self._views_logits(down_right) + self._views_logits(up_left))
        return logits

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        init_from_data = getattr(self.net, "init_from_data", None)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if init_from_data is not None and getattr(datamodule, "train_x", None) is not None:
            # deterministic (the split's first images); a resumed run's checkpoint then restores the same values
            init_from_data(normalize_uint8(datamodule.train_x[:5000]))
        if self.hparams.compile:
            self.net = torch.compile(self.net)

    def on_train_start(self) -> None:
        # the sanity check ran validation already: forget it so val/acc_best is from real epochs only
        for m in (
            self.val_loss,
            self.val_metrics,
            self.val_confmat,
            self.val_acc_best,
            self.test_each_epoch_acc,
            self.test_each_epoch_loss,
        ):
            m.reset()
        if self._restored_best is not None:
            self.val_acc_best.update(torch.tensor(self._restored_best, device=self.device))
        # resumed mid-epoch: the epoch's sums so far (on_load_checkpoint); a mid-epoch resume skips
        # on_train_epoch_start, so the window starts here too
        self._train_sums = self._train_sums.to(self.device)
        self._window = torch.zeros(2, device=self.device)

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], train: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x).float() if train else self.eval_logits(x)
        # label smoothing shapes the training loss only; val/test losses are plain cross-entropy, comparable
        # across runs whatever their smoothing
        loss = self.criterion(logits, y) if train else nn.functional.cross_entropy(logits, y)
        return loss, logits, y

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(4, device=self.device)
        self._window = torch.zeros(2, device=self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch, train=True)
        # per step: a few tensor ops, no .item() (no device sync); logged per epoch, and every
        # trainer.log_every_n_steps steps (on_train_batch_end)
        with torch.no_grad():
            # the training loss includes label smoothing; the plain cross-entropy is what val/loss measures
            ce = nn.functional.cross_entropy(logits, y) if self.criterion.label_smoothing else loss.detach()
            n = torch.tensor(float(len(y)), device=loss.device)
            sums = torch.stack(
                [loss.detach().float() * n, ce.float() * n, (logits.argmax(1) == y).sum().float(), n]
            )
            self._train_sums += sums
            # (loss x images, images): a view, no index tensor
            self._window += sums[::3]
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # the training loss averaged since the last log, on the steps Lightning writes to the loggers (after the
        # optimiser step global_step counts this batch): TensorBoard's per-step curve, one .item() per log
        every = self.trainer.log_every_n_steps
        if every and self.global_step % every == 0:
            self.log(
                "train/loss_step",
                self._window[0] / self._window[1],
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )
            self._window.zero_()

    def on_train_epoch_end(self) -> None:
        # logged after validation (Lightning's hook order): console.EpochLog prints the epoch once both are in
        loss_sum, ce_sum, correct, n = self._train_sums
        self.log("train/loss", loss_sum / n, sync_dist=True)
        self.log("train/ce", ce_sum / n, sync_dist=True)
        self.log("train/acc", correct / n, sync_dist=True)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, logits, y = self._step(batch)
        if dataloader_idx == 0:
            # weighted: uneven last/DDP batches count per image
            self.val_loss.update(loss, weight=len(y))
            self.val_metrics.update(logits, y)
            self.val_confmat.update(logits, y)
            if self.trainer.world_size == 1:
                self._epoch_val_logits.append(logits.detach().cpu())
        else:
            # the test set, evaluated for information only
            self.test_each_epoch_loss.update(loss, weight=len(y))
            self.test_each_epoch_acc.update(logits, y)

    def on_validation_epoch_start(self) -> None:
        self._epoch_val_logits = []

    def on_validation_epoch_end(self) -> None:
        if self.test_each_epoch_loss.update_called:
            self.log("test_each_epoch/loss", self.test_each_epoch_loss.compute())
            self.log("test_each_epoch/acc", self.test_each_epoch_acc.compute())
            self.test_each_epoch_loss.reset()
            self.test_each_epoch_acc.reset()
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.val_loss.reset()
        acc = values.pop("val/acc")
        self.log("val/acc", acc, prog_bar=True)
        self.log_dict(values)
        if not self.trainer.sanity_checking:
            if self.best_val_epoch < 0 or acc > self.val_acc_best.compute():
                self.best_val_epoch = self.current_epoch
                self.best_val_logits = torch.cat(self._epoch_val_logits) if self._epoch_val_logits else None
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        # after tensorboard_report.TensorBoardReport has read it (callback hooks run first)
        self.val_confmat.reset()

    # metric states are not in the state_dict: carry the best-so-far through checkpoints so a resumed run
    # reports the true best validation accuracy and its epoch, and the epoch's training sums so far, so a run
    # resumed mid-epoch logs the same train/loss and train/acc
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.best_val_epoch >= 0:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        checkpoint["best_val_epoch"] = self.best_val_epoch
        checkpoint["train_sums"] = self._train_sums.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_epoch = checkpoint["best_val_epoch"]
        self._restored_best = checkpoint.get("val_acc_best")
        self._train_sums = checkpoint["train_sums"]
        # a whole-run schedule's planned length: configure_optimizers checks the resumed run against it
        scheds = checkpoint.get("lr_schedulers") or [{}]
        self._planned_steps = optim.schedule_horizon(scheds[0])

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.test_loss.update(loss, weight=len(y))
        self.test_metrics.update(logits, y)

    def on_test_epoch_end(self) -> None:
        self.log("test/loss", self.test_loss.compute())
        self.test_loss.reset()
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """(B, 10) float32 logits; the report takes softmax(logits / T) with the run's temperature
        (fmnist_lit.calibration), which needs the logits themselves."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        # logits (B, 10): calibration needs them, softmax(logits / T) follows
        return self.eval_logits(x)

    def configure_optimizers(self) -> dict[str, Any]:
        # the schedule's horizon is the run's length, known only once the trainer exists (fmnist_lit/optim.py)
        return optim.build(
            self,
            self.optimizer_fn,
            self.scheduler_fn,
            self.trainer.estimated_stepping_batches,
            self._planned_steps,
            self.hparams.bias_lr_mult,
        )
