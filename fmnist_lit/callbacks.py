"""The project's training callbacks: the divergence check, the moving average of the weights (EMA), and
debug=overfit's verdict. Checkpoints: fmnist_lit/resume.py; TensorBoard's figures and HParams:
fmnist_lit/tensorboard_report.py; console and train.log: fmnist_lit/console.py.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from fmnist_lit.utils import UserError

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The training loss became NaN or inf: the run diverged (reported as one line, exit 2; a failed sweep job)."""


class FailOnNonFiniteLoss(L.Callback):
    """Stop the run when the training loss is NaN/inf: a diverged run must fail, not finish at chance accuracy with
    exit 0 (and Optuna records the trial as FAIL). On by default (conf/callbacks/default.yaml).

    Every step the loss is added to a running sum on its device (no sync); the sum is checked, one device sync,
    every `every_n_steps` steps and at the last step of each epoch, before validation and checkpointing see the
    diverged weights. Under DDP the ranks agree on the outcome, so they all stop together."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self._sum: torch.Tensor | None = None
        self._first_batch = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self._sum is None:
            self._sum, self._first_batch = torch.zeros((), device=loss.device), batch_idx
        self._sum += loss.detach().float()
        if (batch_idx + 1) % self.every_n_steps == 0 or batch_idx + 1 >= trainer.num_training_batches:
            self._check(trainer, batch_idx)

    def _check(self, trainer: L.Trainer, batch_idx: int) -> None:
        finite = bool(torch.isfinite(self._sum))
        self._sum = None
        # any rank
        diverged = trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if diverged:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
            raise NonFiniteLossError(
                f"the training loss became NaN/inf in batches {self._first_batch}-{batch_idx} "
                f"of epoch {trainer.current_epoch}: the run diverged; lower optimizer.lr "
                f"(the learning rate was {lr:.3g} there)"
            )


def ema_update(decay: float, warmup: bool = False):
    """multi_avg_fn for torch.optim.swa_utils.AveragedModel: the EMA step over all tensors of one dtype at once (one
    to three foreach kernels per step; Lightning's default avg_fn runs ~4 ops per tensor, ~170 tensors for ResNet-20).
    `warmup`: the decay after n updates is min(decay, (1 + n) / (10 + n)) (see EMA)."""

    @torch.no_grad()
    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        # integer buffers (BatchNorm's num_batches_tracked) are counts: copied
        if not torch.is_floating_point(averages[0]):
            torch._foreach_copy_(averages, currents)
        elif not warmup:
            # average += (current - average) * (1 - decay)
            torch._foreach_lerp_(averages, currents, 1 - decay)
        else:
            # n_averaged is on the tensors' device: the weight stays a 0-dim tensor there (no host sync)
            w = (1 - ((1 + n_averaged) / (10 + n_averaged)).clamp(max=decay)).to(averages[0].dtype)
            delta = torch._foreach_sub(currents, averages)
            torch._foreach_mul_(delta, w)
            torch._foreach_add_(averages, delta)

    return update


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights and BN buffers (`callbacks.ema`).

    The averaged weights are swapped in for every validation epoch (so val/acc, checkpoint selection and
    `test_each_epoch` see them), copied into the net when fitting ends, and saved as the checkpoint's `state_dict`
    (the raw weights go to `current_model_state`), so `eval.py`/`predict.py` load the averaged net.
    One change to Lightning's callback: outside fitting, loading a checkpoint keeps its `state_dict` (the average).
    The parent would put `current_model_state` (the raw weights) back into the module whenever an averaged model
    exists, so `trainer.predict(ckpt_path=best)` after `fit` would have used the raw weights.

    `warmup=True`: the decay after n updates is min(decay, (1 + n) / (10 + n)) (TensorFlow's
    ExponentialMovingAverage with num_updates). With a fixed decay of 0.999 the random initial weights keep a share
    0.999^n of the average: 27% after 3 epochs of 430 steps, so a short run's first epochs validate at chance.
    """

    def __init__(self, *, decay: float = 0.999, warmup: bool = False, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        # AveragedModel calls multi_avg_fn once per (device, dtype) group of tensors (avg_fn: once per tensor)
        self._kwargs.update(avg_fn=None, multi_avg_fn=ema_update(decay, warmup))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # resuming: restore both the raw and the averaged weights
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class OverfitCheck(L.Callback):
    """debug=overfit's verdict: a model trained on a few batches only must learn them by heart. If its training
    accuracy stays below `min_train_acc`, something between the data and the loss is broken (labels shuffled
    against images, a net that cannot see its input, an LR far off): the run stops with one error line."""

    def __init__(self, min_train_acc: float = 0.99) -> None:
        self.min_train_acc = min_train_acc

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = float(trainer.callback_metrics.get("train/acc", float("nan")))
        batches, epochs = trainer.overfit_batches, trainer.current_epoch
        if not acc >= self.min_train_acc:
            raise UserError(
                f"debug=overfit: train/acc {acc:.4f} < {self.min_train_acc} after {epochs} epochs on "
                f"{batches} batches: the model cannot learn a few batches by heart (labels, loss or net broken, "
                "or optimizer.lr far off)"
            )
        log.info(
            "debug=overfit: train/acc %.4f >= %s on %s batches: the model can learn",
            acc,
            self.min_train_acc,
            batches,
        )
