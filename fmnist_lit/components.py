"""What a run is built from, each part instantiated from its config section with the part's refusal of a value as
one UserError (never a traceback from deep inside Lightning): the net and LightningModule, the DataModule, the
callbacks, the loggers and the Trainer. train.py builds them; its check before writing builds the cheap ones first,
so that a refused setting leaves no run folder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fmnist_lit.utils import UserError


def build(cfg: DictConfig, section: str) -> Any:
    """`instantiate(cfg.<section>)`, a setting its class refuses (`+model.net.depth=3`, a key the typo message
    suggested that the class does not take) as one UserError. Building the net and the DataModule reads no data."""
    try:
        return instantiate(cfg[section])
    except InstantiationException as e:
        if isinstance(e.__cause__, (TypeError, ValueError)):
            raise UserError(f"{section}: {' '.join(str(e.__cause__).split())}") from e
        raise


def build_callback(name: str, cb_cfg: Any) -> L.Callback:
    try:
        return instantiate(cb_cfg)
    except InstantiationException as e:
        # a callback refusing a value (callbacks.ema.decay=1.5, ...mode=maxx)
        if isinstance(e.__cause__, (TypeError, ValueError, MisconfigurationException)):
            raise UserError(f"callbacks.{name}: {' '.join(str(e.__cause__).split())}") from e
        raise


def _callback_cfgs(cfg: DictConfig):
    """(name, settings) of the callbacks switched on (`callbacks.<name>=null` switches one off)."""
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None:
            continue
        if name == "model_checkpoint" and cfg.data.val_size == 0:
            # nothing to select on: keep only last.ckpt, and test the final weights
            cb_cfg = OmegaConf.merge(cb_cfg, {"monitor": None, "save_top_k": 0})
        yield name, cb_cfg


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [build_callback(name, cb_cfg) for name, cb_cfg in _callback_cfgs(cfg)]


def check_callbacks(cfg: DictConfig, out: Path) -> None:
    """Builds the callbacks before Hydra makes the run folder `out`, so that one refusing a value
    (callbacks.ema.decay=1.5, callbacks.model_checkpoint.mode=maxx) leaves no folder behind. `${paths.output_dir}`
    resolves to `out` (building a checkpoint callback creates no folder). `${hydra:runtime.choices.model}` (the
    report's hparams) resolves from the composed config's `hydra` node, which Hydra hands to its callbacks before it
    sets it for the job. A callback failing other than by refusal (a `_target_` typo) is left to the run to report."""
    # the caller's config keeps its ${paths.output_dir}
    cfg = copy.deepcopy(cfg)
    # the CLI's full config (the tests compose one without `hydra` and set HydraConfig); the job sets it again
    if "hydra" in cfg:
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        # a callback's settings do not depend on it: not decided (nor logged) before the run says where it writes
        cfg.trainer.precision = "32-true"
    for name, cb_cfg in _callback_cfgs(cfg):
        try:
            settings = OmegaConf.to_container(cb_cfg, resolve=True)
        except OmegaConfBaseException:
            # an interpolation pointing nowhere: run() reports it
            continue
        try:
            build_callback(name, settings)
        except InstantiationException:
            pass


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg)
    # `logger=null`: the LR monitor has nowhere to write (Lightning refuses it then)
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # `callbacks.progress_bar=null` means no bar: Lightning would otherwise add its own (into logs, too)
    no_bar = (
        not any(isinstance(c, ProgressBar) for c in callbacks) and "enable_progress_bar" not in cfg.trainer
    )
    try:
        return instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            **({"enable_progress_bar": False} if no_bar else {}),
        )
    except InstantiationException as e:
        # Lightning refusing a setting, or a trainer.* key it does not take
        cause = e.__cause__
        if isinstance(cause, (MisconfigurationException, TypeError, ValueError)):
            raise UserError(f"trainer: {' '.join(str(cause).split())}") from e
        raise
