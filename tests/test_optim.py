"""Every optimiser and LR schedule the config groups offer builds, follows its plan over the run's length, is on
eval.py's allowlist, and carries its horizon through a checkpoint (for exact resume)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from fmnist_lit import optim
from fmnist_lit.checkpoint import ALLOWED_TARGETS
from fmnist_lit.cli import CONF_DIR
from fmnist_lit.utils import UserError
from fmnist_lit.validate import check_train_config
from tests.helpers import compose_cfg

OPTIMIZERS = sorted(p.stem for p in (Path(CONF_DIR) / "optimizer").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (Path(CONF_DIR) / "scheduler").glob("*.yaml"))
STEPS = 40


class FakeTrainer:
    max_epochs = 4


def built(tmp_path, root, optimizer: str, scheduler: str):
    cfg = compose_cfg(tmp_path, root, [f"optimizer={optimizer}", f"scheduler={scheduler}", "model=mlp"])
    model = instantiate(cfg.model)
    model.__dict__["_trainer"] = FakeTrainer()
    return cfg, model, optim.build(model, model.optimizer_fn, model.scheduler_fn, STEPS, None)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_combination_builds_and_is_allowed(tmp_path, tiny_root, optimizer, scheduler):
    cfg, _, conf = built(tmp_path, tiny_root, optimizer, scheduler)
    assert cfg.optimizer._target_ in ALLOWED_TARGETS and cfg.scheduler._target_ in ALLOWED_TARGETS
    opt = conf["optimizer"]
    # planned over the whole run: every option but the per-epoch ones
    whole_run = scheduler not in ("step", "constant")
    assert opt.param_groups[0]["lr"] > 0 or whole_run
    sched = conf["lr_scheduler"]
    assert sched["interval"] == ("step" if whole_run else "epoch")
    lrs = []
    for _ in range(STEPS):
        opt.step()
        sched["scheduler"].step()
        lrs.append(opt.param_groups[0]["lr"])
    peak = cfg.optimizer.lr
    if whole_run:
        # planned over the run's 40 steps: at most the configured LR, annealed to ~0 by the end
        assert max(lrs) <= peak * (1 + 1e-6) and lrs[-1] < 0.01 * peak
        assert optim.schedule_horizon(sched["scheduler"].state_dict()) == STEPS
    if scheduler == "constant":
        assert lrs == [peak] * STEPS


def test_warmup_rises_then_falls(tmp_path, tiny_root):
    _, _, conf = built(tmp_path, tiny_root, "adamw", "warmup_cosine")
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(STEPS - 1):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    top = lrs.index(max(lrs))
    # warmup_pct 0.05 of 40 steps: 2 steps up, then down
    assert top == 2 and lrs[0] < 0.01 * lrs[top] and all(a >= b for a, b in zip(lrs[top:], lrs[top + 1 :]))


def test_a_resumed_schedule_keeps_its_plan(tmp_path, tiny_root):
    _, model, _ = built(tmp_path, tiny_root, "sgd", "cosine")
    assert (
        optim.build(model, model.optimizer_fn, model.scheduler_fn, 10, 40)["lr_scheduler"]["scheduler"].T_max
        == 40
    )
    with pytest.raises(UserError, match="planned for 40 steps, this run needs 50"):
        optim.build(model, model.optimizer_fn, model.scheduler_fn, 50, 40)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR"],
            "scheduler.max_lr: CosineAnnealingLR takes no `max_lr`",
        ),
        (["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"], "optimizer.betas: SGD takes no `betas`"),
        (["scheduler=cosine", "+scheduler.T_max=10"], "scheduler.T_max: `T_max` is derived from the run"),
        (["optimizer._target_=torch.optim.Nope"], "optimizer._target_=torch.optim.Nope: no such class"),
        (
            ["scheduler=warmup_cosine", "scheduler.warmup_pct=1.5"],
            "scheduler.warmup_pct=1.5: must be a number in",
        ),
    ],
)
def test_a_key_the_class_does_not_take_is_one_error(tmp_path, tiny_root, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        check_train_config(compose_cfg(tmp_path, tiny_root, overrides), resolved=False)


def test_switching_groups_leaves_no_stray_keys(tmp_path, tiny_root):
    cfg = compose_cfg(tmp_path, tiny_root, ["optimizer=sgd", "scheduler=cosine"])
    assert set(cfg.optimizer) == {"_target_", "_partial_", "lr", "momentum", "nesterov", "weight_decay"}
    assert set(cfg.scheduler) == {"_target_", "_partial_", "eta_min"}
    optim.check_keys(cfg)
