"""The optimiser and LR schedule of a run, from the `optimizer` and `scheduler` config groups (conf/optimizer/,
conf/scheduler/), which reach the LightningModule as factories (`_partial_: true`).

What depends on the run is derived here, never typed in a config: a schedule planned over the whole run
(`total_steps` of OneCycleLR and WarmupCosineLR, `T_max` of CosineAnnealingLR) gets the run's number of optimiser
steps and is stepped every step; any other schedule (StepLR, ConstantLR) is stepped once per epoch.

`check_keys` refuses, before a run starts, a key the chosen class does not take (`scheduler.max_lr` left over
under `scheduler=cosine`): one line naming it and what the class takes.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from fmnist_lit.utils import UserError

# a schedule's length in optimiser steps, when it is the whole run's
HORIZON_KEYS = ("total_steps", "T_max")
# the factory's arguments that the module passes itself (never in a config)
PASSED = {"optimizer": {"params"}, "scheduler": {"optimizer", *HORIZON_KEYS}}


class WarmupCosineLR(SequentialLR):
    """Linear warm-up from lr/1000 to the optimiser's LR over warmup_pct x total_steps steps, then cosine
    annealing to eta_min over the rest. Stepped every optimiser step; `total_steps` is kept in its state so that a
    resumed run can check it was planned for the same length."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_pct: float = 0.05,
        eta_min: float = 0.0,
    ) -> None:
        if not 0 <= warmup_pct < 1:
            raise UserError(f"scheduler.warmup_pct={warmup_pct}: must be a number in [0, 1)")
        warmup = min(total_steps - 1, round(warmup_pct * total_steps))
        self.total_steps = total_steps
        if warmup < 1:
            # no room for a warm-up (a run of a step or two): cosine only
            super().__init__(optimizer, [CosineAnnealingLR(optimizer, max(1, total_steps), eta_min)], [])
            return
        rise = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
        fall = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=eta_min)
        super().__init__(optimizer, [rise, fall], milestones=[warmup])


def _factory_class(cfg: DictConfig, group: str) -> tuple[type, set[str]] | None:
    """(class, keys given in the config) of `cfg.<group>`, or None when the group is off or not a factory."""
    node = OmegaConf.select(cfg, group)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    module, _, name = str(node._target_).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"{group}._target_={node._target_}: no such class") from None
    return cls, {k for k in node.keys() if not str(k).startswith("_")}  # noqa: SIM118 (keys(): no resolving)


def check_keys(cfg: DictConfig) -> None:
    """UserError for an `optimizer.*` or `scheduler.*` key its class does not take."""
    for group in ("optimizer", "scheduler"):
        found = _factory_class(cfg, group)
        if found is None:
            continue
        cls, given = found
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
        unknown = sorted(given - params)
        passed_here = sorted(given & PASSED[group])
        if unknown or passed_here:
            key = (unknown or passed_here)[0]
            why = (
                f"{cls.__name__} takes no `{key}`"
                if unknown
                else f"`{key}` is derived from the run, not set in the config"
            )
            takes = ", ".join(sorted(params - PASSED[group]))
            raise UserError(
                f"{group}.{key}: {why} (it takes {takes}; switch schedules with `{group}=<option>`, "
                f"conf/{group}/)"
            )


def param_groups(module: torch.nn.Module, optimizer_fn: Any, bias_lr_mult: float) -> list[dict[str, Any]]:
    """One group, or with `bias_lr_mult` != 1 two: the weights of convs and linear layers, and the 1-D parameters
    (BatchNorm scales and shifts, biases) at `bias_lr_mult` x the LR (airbench trains BN biases 64x faster). Their
    weight decay is divided by the multiplier, so the decay applied per step (LR x decay, for SGD's L2 and AdamW's
    decoupled decay alike) stays that of the config."""
    params = [p for p in module.parameters() if p.requires_grad]
    if bias_lr_mult == 1:
        return [{"params": params}]
    lr = optimizer_fn.keywords.get("lr")
    if lr is None:
        raise UserError("model.bias_lr_mult needs the optimiser's LR in the config: set optimizer.lr")
    decay = optimizer_fn.keywords.get("weight_decay", 0.0)
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {
            "params": [p for p in params if p.ndim <= 1],
            "lr": lr * bias_lr_mult,
            "weight_decay": decay / bias_lr_mult,
        },
    ]


def build(
    module: Any,
    optimizer_fn: Any,
    scheduler_fn: Any,
    total_steps: float,
    planned_steps: int | None,
    bias_lr_mult: float = 1.0,
) -> dict[str, Any]:
    """Lightning's `configure_optimizers` result for `module`. `total_steps`: the trainer's estimated stepping
    batches; `planned_steps`: the horizon a resumed checkpoint's schedule was planned for (None if not resuming);
    `bias_lr_mult`: see `param_groups`."""
    optimizer = optimizer_fn(params=param_groups(module, optimizer_fn, bias_lr_mult))
    if scheduler_fn is None:
        return {"optimizer": optimizer}
    horizon = [k for k in HORIZON_KEYS if k in inspect.signature(scheduler_fn.func).parameters]
    kwargs: dict[str, Any] = {}
    max_lr = scheduler_fn.keywords.get("max_lr")
    if max_lr is not None and len(optimizer.param_groups) > 1:
        # OneCycleLR sets every group's LR from max_lr: one peak per group keeps the groups' ratio
        base = optimizer.param_groups[0]["lr"]
        kwargs["max_lr"] = [max_lr * g["lr"] / base for g in optimizer.param_groups]
    if horizon:
        kwargs[horizon[0]] = planned_horizon(total_steps, planned_steps, module.trainer.max_epochs)
        pct = scheduler_fn.keywords.get("pct_start")
        if pct is not None:
            kwargs["pct_start"] = one_cycle_pct_start(pct, kwargs[horizon[0]])
    scheduler = scheduler_fn(optimizer=optimizer, **kwargs)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": scheduler,
            "interval": "step" if horizon else "epoch",
            "monitor": "val/loss",
        },
    }


def planned_horizon(total_steps: float, planned_steps: int | None, max_epochs: int) -> int:
    """The schedule's length in steps: the run's, or the resumed checkpoint's (which must not be shorter)."""
    if not math.isfinite(total_steps):
        # max_epochs=-1 (validate.py refuses it before a run starts)
        raise UserError(
            "this LR schedule needs a finite run length: set trainer.max_epochs, or scheduler=null"
        )
    total = max(1, int(total_steps))
    if planned_steps is not None and total > planned_steps:
        raise UserError(
            f"ckpt_path: the checkpoint's LR schedule was planned for {planned_steps} steps, this run needs "
            f"{total} (trainer.max_epochs={max_epochs}); resume with the original trainer.max_epochs (to "
            "extend runs, train with scheduler=null)"
        )
    return planned_steps or total


def schedule_horizon(scheduler_state: dict[str, Any]) -> int | None:
    """The planned length in steps stored in a checkpoint's scheduler state (None: not a whole-run schedule)."""
    for key in HORIZON_KEYS:
        if isinstance(scheduler_state.get(key), int):
            return scheduler_state[key]
    return None


def one_cycle_pct_start(pct_start: float, total_steps: int) -> float:
    """OneCycleLR warms up for pct_start x total_steps steps and divides by that length minus one step: a 1-step
    warm-up is 0/0 (ZeroDivisionError, e.g. 4 steps at pct_start 0.25) and shorter ones are degenerate. Tiny runs
    get a 2-step warm-up (3 or more steps in all) or none (1 or 2 steps); longer runs keep pct_start."""
    if pct_start * total_steps >= 2:
        return pct_start
    return 2 / total_steps if total_steps >= 3 else 0.0
