"""Every check of the user's settings, before any work starts: one UserError naming the key, the bad value and
what is allowed (`error: optimizer.lr=-1: must be a positive number`), never a traceback from deep inside
torch or Lightning.

Keys are read with `OmegaConf.select`, one at a time, so the checks also run on a config whose `${hydra:...}`
paths cannot be resolved yet (cli.CheckBeforeWriting calls them before Hydra writes anything). A key that is
absent (e.g. `scheduler.pct_start` under `scheduler=null`) is not checked.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from fmnist_lit.arguments import no_such_setting, own_keys
from fmnist_lit.optim import HORIZON_KEYS, check_keys
from fmnist_lit.utils import UserError

_ABSENT = object()
# the seeds numpy (hence Lightning's seed_everything) accepts: [0, 2**32 - 1]
MAX_SEED = 2**32 - 1


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _precisions() -> list[Any]:
    """What Trainer(precision=) accepts, from Lightning's own type (so a new Lightning value is not refused)."""
    try:
        from lightning.fabric.connector import _PRECISION_INPUT
    except ImportError:
        # renamed in a later Lightning: the values its docs list
        return [
            "64-true",
            "32-true",
            "16-true",
            "bf16-true",
            "16-mixed",
            "bf16-mixed",
            "64",
            "32",
            "16",
            "bf16",
            64,
            32,
            16,
            "transformer-engine",
            "transformer-engine-float16",
        ]

    def flat(t: Any) -> list[Any]:
        args = typing.get_args(t)
        return [x for a in args for x in flat(a)] if args else [t]

    return flat(_PRECISION_INPUT)


def _accelerator_problem(v: Any) -> str | None:
    """None if `v` can run here, else what is wrong."""
    if v in ("auto", "cpu"):
        return None
    if v in ("gpu", "cuda"):
        return None if torch.cuda.is_available() else "no CUDA GPU is available here (use cpu or auto)"
    if v == "mps":
        return None if torch.backends.mps.is_available() else "no Apple MPS device here (use cpu or auto)"
    return "must be one of auto, cpu, gpu, cuda, mps"


# (key, test, what is allowed): the settings people type on the command line
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    (
        "seed",
        lambda v: v is None or (_int(v) and 0 <= v <= MAX_SEED),
        f"must be an integer in [0, {MAX_SEED}] or null (not seeded)",
    ),
    (
        "threads",
        lambda v: v is None or (_int(v) and v > 0),
        "must be a positive integer or null (every core)",
    ),
    (
        "trainer.max_epochs",
        lambda v: v is None or (_int(v) and (v > 0 or v == -1)),
        "must be a positive number of epochs (or -1: no limit, with scheduler=null)",
    ),
    ("data.batch_size", lambda v: _int(v) and v > 0, "must be a positive integer"),
    ("data.eval_batch_size", lambda v: _int(v) and v > 0, "must be a positive integer"),
    (
        "data.val_size",
        lambda v: _int(v) and 0 <= v < 60_000,
        "must be an integer in [0, 59999] (carved from the 60k training set)",
    ),
    ("optimizer.lr", lambda v: _number(v) and v > 0, "must be a positive number"),
    ("optimizer.weight_decay", lambda v: _number(v) and v >= 0, "must be a number >= 0"),
    (
        "scheduler.pct_start",
        lambda v: _number(v) and 0 < v < 1,
        "must be a number in (0, 1): the fraction of the steps spent warming up",
    ),
    (
        "scheduler.warmup_pct",
        lambda v: _number(v) and 0 <= v < 1,
        "must be a number in [0, 1): the fraction of the steps spent warming up",
    ),
    (
        "trainer.strategy",
        lambda v: not (isinstance(v, str) and v.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook"))),
        (
            "not supported: a spawned or forked rank cannot hand its predictions back for the report; use "
            "trainer=ddp (one process per device, started like this one)"
        ),
    ),
    ("model.label_smoothing", lambda v: _number(v) and 0 <= v < 1, "must be a number in [0, 1)"),
    ("model.tta_shift", lambda v: _int(v) and 0 <= v <= 4, "must be an integer number of pixels in [0, 4]"),
    ("model.bias_lr_mult", lambda v: _number(v) and v > 0, "must be a positive number"),
    (
        "data.augment_flip",
        lambda v: v in (True, False, "alternate"),
        "must be true, false or alternate (each image mirrored in every other epoch; needs data.in_memory=true)",
    ),
    (
        "trainer.precision",
        lambda v: v == "auto" or v in _precisions(),
        "must be one of auto, 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true",
    ),
]


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)


def _is_interpolation(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    # `leaf in node` would resolve the value (measuring the CPU for ${auto_precision:...}): keys() does not
    return isinstance(node, DictConfig) and leaf in node.keys() and OmegaConf.is_interpolation(node, leaf)  # noqa: SIM118


def check_rules(
    cfg: DictConfig, rules: list[tuple[str, Callable[[Any], bool], str]] = RULES, resolved: bool = True
) -> None:
    """`resolved=False`: skip values that are still interpolations (checked once the run resolves its config;
    resolving `${auto_precision:...}` early would measure the CPU for a run that may be refused)."""
    for key, ok, allowed in rules:
        if not resolved and _is_interpolation(cfg, key):
            continue
        v = _select(cfg, key)
        if v is not _ABSENT and not ok(v):
            raise UserError(f"{key}={v}: {allowed}")


def _uses_total_steps(cfg: DictConfig) -> bool:
    """True for a schedule planned over the whole run (OneCycleLR, CosineAnnealingLR, WarmupCosineLR)."""
    target = _select(cfg, "scheduler._target_")
    if target is _ABSENT or target is None:
        return False
    try:
        params = inspect.signature(get_method(str(target))).parameters
    except Exception:  # noqa: BLE001 (an unknown target is reported by optim.check_keys)
        return False
    return any(k in params for k in HORIZON_KEYS)


def check_train_config(cfg: DictConfig, resolved: bool = True) -> None:
    """train.py: UserError for the first bad setting (`resolved`: see check_rules)."""
    if _select(cfg, "trainer.max_epochs") == 0:
        raise UserError("trainer.max_epochs=0: nothing would be trained; use eval.py to test a checkpoint")
    check_rules(cfg, resolved=resolved)
    check_keys(cfg)
    unbounded = _select(cfg, "trainer.max_epochs") == -1 and _select(cfg, "trainer.max_steps") in (
        _ABSENT,
        None,
        -1,
    )
    if unbounded and _uses_total_steps(cfg):
        raise UserError(
            "trainer.max_epochs=-1: this LR schedule needs a finite run length; give a number of "
            "epochs (or trainer.max_steps), or use scheduler=null for a constant LR"
        )
    problem = _accelerator_problem(_select(cfg, "trainer.accelerator"))
    if problem:
        raise UserError(f"trainer.accelerator={_select(cfg, 'trainer.accelerator')}: {problem}")
    ckpt = _select(cfg, "ckpt_path")
    if ckpt not in (_ABSENT, None) and not Path(ckpt).is_file():
        raise UserError(f"ckpt_path={ckpt}: no such file")
    es = _select(cfg, "callbacks.early_stopping")
    if (
        _select(cfg, "data.val_size") == 0
        and es not in (_ABSENT, None)
        and str(es.get("monitor", "")).startswith("val/")
    ):
        raise UserError(
            "early stopping monitors a validation metric but data.val_size=0: "
            "set data.val_size > 0 or drop callbacks.early_stopping"
        )
    mult = _select(cfg, "model.bias_lr_mult")
    if mult not in (_ABSENT, None, 1) and _select(cfg, "optimizer.lr") in (_ABSENT, None):
        # its second parameter group's LR is lr x mult (fmnist_lit/optim.py)
        raise UserError("model.bias_lr_mult needs the optimiser's LR in the config: set optimizer.lr")
    if _select(cfg, "data.augment_flip") == "alternate" and _select(cfg, "data.in_memory") is False:
        raise UserError(
            "data.augment_flip=alternate needs data.in_memory=true (the in-memory loader knows each image's index)"
        )


def _leaf_keys(node: Any, prefix: str = "") -> set[str]:
    """Dotted keys of a plain (to_container) config's leaves: {"data.root", "threads", ...}."""
    if isinstance(node, dict):
        return {k for key, v in node.items() for k in _leaf_keys(v, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


def check_eval_config(cfg: DictConfig) -> None:
    """eval.py: the keys of conf/eval.yaml only: a setting eval.py would ignore, such as
    `++trainer.limit_test_batches=5`, is refused instead of silently testing all 10,000 images."""
    known = own_keys("eval")
    given = _leaf_keys({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("hydra", "paths")})
    unknown = sorted(k for k in given if k not in known and not any(k.startswith(f"{n}.") for n in known))
    if unknown:
        raise UserError(no_such_setting("eval.py", f"{unknown[0]}={_select(cfg, unknown[0])}", known))
    check_rules(cfg, [r for r in RULES if r[0] == "threads"])
    problem = _accelerator_problem(_select(cfg, "accelerator"))
    if problem:
        raise UserError(f"accelerator={_select(cfg, 'accelerator')}: {problem}")
