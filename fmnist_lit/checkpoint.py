"""Reading a checkpoint back into a model, for eval.py, predict.py and the scripts (and resuming in train.py);
checkpoints are written during training by fmnist_lit/resume.py.

A checkpoint is read with `torch.load(weights_only=True)` whatever the environment says
(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only overrides calls that do not pass it), so no pickled code runs. The model is
rebuilt from the run's `config.yaml` (`<run>/config.yaml` for `<run>/checkpoints/x.ckpt`), and only from classes
the user trusts: every `_target_` in the config's model and data sections must be one of ALLOWED_TARGETS (this
project's nets, module and data, torch's optimisers and schedulers) or a net the user declared on their own side
(`trusted_nets`: the `_target_`s of their checkout's conf/model/*.yaml, and $FMNIST_LIT_TRUST). Exact names only
(a prefix would let `fmnist_lit.models.torch.hub.Path.write_bytes` or `torch.optim.optimizer.torch.load` through:
Hydra resolves a dotted path through module attributes), so a crafted `config.yaml` in a downloaded run folder
cannot make `instantiate` call anything else, and nothing the run folder says can widen the list.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fmnist_lit import models
from fmnist_lit.cli import CONF_DIR
from fmnist_lit.utils import UserError

log = logging.getLogger(__name__)

# The callables a run's config may name. Each takes plain values (numbers, strings, lists) or another allowed
# object; none takes a function (so no LambdaLR, MultiplicativeLR, CyclicLR's scale_fn), none reads or writes a
# path except the DataModule, which reads Fashion-MNIST (or the CSVs) it names.
NETS = {
    f"fmnist_lit.models.{name}"
    for name, obj in vars(models).items()
    if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == models.__name__
}
OPTIMIZERS = {
    f"torch.optim.{name}"
    for name in (
        "SGD",
        "Adam",
        "AdamW",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Adagrad",
        "Adadelta",
        "Adamax",
        "ASGD",
        "Rprop",
        "Adafactor",
    )
}
SCHEDULERS = {
    f"torch.optim.lr_scheduler.{name}"
    for name in (
        "OneCycleLR",
        "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts",
        "StepLR",
        "MultiStepLR",
        "ExponentialLR",
        "LinearLR",
        "ConstantLR",
        "PolynomialLR",
        "ReduceLROnPlateau",
    )
} | {"fmnist_lit.optim.WarmupCosineLR"}
ALLOWED_TARGETS = frozenset(
    NETS
    | OPTIMIZERS
    | SCHEDULERS
    | {"fmnist_lit.module.LitClassifier", "fmnist_lit.data.FashionMNISTDataModule"}
)


# comma-separated exact class names (`mynets.Tiny,mynets.Wide`) of nets of one's own, trusted like conf/model/'s
TRUST_ENV = "FMNIST_LIT_TRUST"


def _targets(node: Any) -> set[str]:
    """Every `_target_` string in a plain config (dicts and lists, at any depth)."""
    if isinstance(node, dict):
        own = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return own.union(*(_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_targets(v) for v in node))
    return set()


def trusted_nets() -> set[str]:
    """The nets the user vouches for from their own side, never from a run folder: the `_target_`s named by this
    checkout's conf/model/*.yaml (their config: `python train.py model=<name>` runs them anyway) and the exact
    class names in $FMNIST_LIT_TRUST."""
    names = {n.strip() for n in os.environ.get(TRUST_ENV, "").split(",") if n.strip()}
    for path in sorted((Path(CONF_DIR) / "model").glob("*.yaml")):
        try:
            names |= _targets(OmegaConf.to_container(OmegaConf.load(path)))
        # a broken model config of the user's trusts nothing; `model=<it>` reports the error itself
        except Exception as e:  # noqa: BLE001
            log.warning("%s: not read for trusted nets (%s)", path, type(e).__name__)
    return names


def locate(ckpt_path: str | Path) -> Path:
    """`ckpt_path` as given, or for a finished run's folder the checkpoint it tested (metrics.json's
    `best_checkpoint`, looked up in the folder's own checkpoints/, so a moved or downloaded run works too)."""
    path = Path(ckpt_path)
    if not path.is_dir():
        return path
    try:
        best = json.loads((path / "metrics.json").read_text()).get("best_checkpoint")
    except (OSError, ValueError, AttributeError):
        best = None
    if not best or not (path / "checkpoints" / Path(best).name).is_file():
        raise UserError(
            f"ckpt_path={path}: a folder but not a finished train.py run with a tested checkpoint (no metrics.json "
            "naming one in its checkpoints/); give a .ckpt file, e.g. its checkpoints/last.ckpt"
        )
    return path / "checkpoints" / Path(best).name


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's plain contents, or UserError saying in one line why it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # any failure to read means 'not a checkpoint': truncated, not a torch file, pickles weights_only refuses
    except Exception as e:  # noqa: BLE001
        raise UserError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({_load_error(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"ckpt_path={path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def _load_error(e: Exception) -> str:
    """torch.load's many-line message -> a few words."""
    text = str(e)
    # a pickled callable: code to run
    if found := re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", text):
        return f"it names code to run, `{found[1]}`; nothing was run"
    if "WeightsUnpickler error" in text:
        return "not a PyTorch file"
    if "zip archive" in text:
        return "truncated or corrupted"
    if isinstance(e, EOFError):
        return "empty or truncated"
    return (text.strip().splitlines() or [type(e).__name__])[0][:120]


def _refused(node: Any, allowed: frozenset[str] | set[str]) -> str | None:
    """The first `_target_` (at any depth, `_args_` lists included) not in ALLOWED_TARGETS, or a string that would
    be read as an interpolation again (`\\${...}` resolves to `${...}`): what instantiate sees must be what was
    checked."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if "_target_" in node and not (isinstance(target, str) and target in allowed):
            return f"`{target}`"
        return next((r for v in node.values() if (r := _refused(v, allowed))), None)
    if isinstance(node, list):
        return next((r for v in node if (r := _refused(v, allowed))), None)
    return f"the interpolation {node!r}" if isinstance(node, str) and "${" in node else None


def check_targets(cfg: DictConfig, where: str) -> DictConfig:
    """cfg as plain data (no interpolation left), or UserError if it names a callable that is neither in
    ALLOWED_TARGETS nor a net the user trusts (`trusted_nets`)."""
    # run_config resolved it once; a `${` left now (from an escaped `\\${`) would be resolved again by instantiate
    plain = OmegaConf.to_container(cfg, resolve=False)
    if (bad := _refused(plain, ALLOWED_TARGETS | trusted_nets())) is not None:
        name = bad.strip("`")
        raise UserError(
            f"{where}: refuses to build {bad} (a run's config may name only this project's classes, torch's "
            f"optimisers and schedulers, and nets you trust: if it is your own, name it in a conf/model/<name>.yaml "
            f"of this checkout or set {TRUST_ENV}={name})"
        )
    return OmegaConf.create(plain)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """`<run>/checkpoints/x.ckpt`, or `<run>/checkpoints/every_epoch/x.ckpt` (callbacks=every_epoch) -> `<run>`."""
    parents = Path(ckpt_path).resolve().parents
    if len(parents) > 2 and parents[1].name == "checkpoints":
        return parents[2]
    # a file at or next to the filesystem root has fewer parents: its folder, where no config.yaml is found
    return parents[min(1, len(parents) - 1)]


def run_config(ckpt_path: str | Path) -> tuple[Path, DictConfig]:
    """`<run>/checkpoints/[every_epoch/]x.ckpt` -> (`<run>`, the run's config), its targets checked."""
    run_dir = run_dir_of(ckpt_path)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(
            f"ckpt_path={ckpt_path}: no {cfg_path} (expected <run>/checkpoints/<file>.ckpt of a train.py run)"
        )
    try:
        cfg = OmegaConf.load(cfg_path)
        OmegaConf.resolve(cfg)
    except Exception as e:  # noqa: BLE001 (YAML and OmegaConf errors alike: the file is not a config)
        raise UserError(f"{cfg_path}: not a readable config ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(cfg, DictConfig) or not (cfg.get("model") and cfg.get("data") and cfg.get("trainer")):
        raise UserError(f"{cfg_path}: not a train.py config (needs model, data and trainer)")
    # instantiate gets exactly the data that was checked
    cfg.model = check_targets(cfg.model, str(cfg_path))
    cfg.data = check_targets(cfg.data, str(cfg_path))
    return run_dir, cfg


# what Lightning needs to resume fitting (a checkpoint saved with weights only lacks optimizer_states)
RESUME_KEYS = ("state_dict", "pytorch-lightning_version", "epoch", "global_step", "loops", "optimizer_states")


def check_resumable(
    ckpt: dict[str, Any], model: L.LightningModule, ckpt_path: str | Path, max_epochs: int
) -> None:
    """UserError unless `train.py ckpt_path=` can resume `model` from ckpt (read by read_checkpoint) and train on
    for `max_epochs` in all."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise UserError(
            f"ckpt_path={ckpt_path}: not a checkpoint to resume training from (no {', '.join(missing)}); "
            "a checkpoint of train.py's run folder resumes, any checkpoint evaluates with eval.py"
        )
    # torch.compile'd nets save their weights under `net._orig_mod.`: compare the plain names, then the flag
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {
        k.replace("._orig_mod.", "."): tuple(getattr(v, "shape", ())) for k, v in ckpt["state_dict"].items()
    }
    if got != want:
        diff = [
            f"{k}: {got.get(k, 'missing')} here {want.get(k, 'absent')}"
            for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)
        ]
        raise UserError(
            f"ckpt_path={ckpt_path}: weights do not fit the configured model ({len(diff)} differ, e.g. "
            f"{'; '.join(diff[:2])}): resume with the run's own model settings"
        )
    compiled = any("._orig_mod." in k for k in ckpt["state_dict"])
    if compiled != bool(model.hparams.get("compile")):
        raise UserError(
            f"ckpt_path={ckpt_path}: the run was trained with model.compile={str(compiled).lower()}: "
            "resume with the same setting"
        )
    # epochs whose training finished when the checkpoint was written (Lightning's fit-loop progress)
    done = ckpt["loops"].get("fit_loop", {}).get("epoch_progress", {}).get("current", {}).get("processed", 0)
    if max_epochs != -1 and done >= max_epochs:
        raise UserError(
            f"ckpt_path={ckpt_path}: its run finished all trainer.max_epochs={max_epochs} epochs, nothing is "
            f"left to train: test it with `python eval.py ckpt_path={ckpt_path}` (or train longer with a larger "
            "trainer.max_epochs and scheduler=null)"
        )


def build_from_run(run_cfg: DictConfig, section: str, ckpt_path: str | Path, **overrides: Any) -> Any:
    """`instantiate(run_cfg.<section>)` for a run read back; a run whose settings this code's classes no longer
    take (a run older than the code) is one UserError: such runs are re-run, not kept loadable."""
    try:
        return instantiate(run_cfg[section], **overrides)
    except InstantiationException as e:
        if not isinstance(e.__cause__, (TypeError, ValueError)):
            raise
        cause = " ".join(str(e.__cause__).split())[:200]
        raise UserError(
            f"ckpt_path={ckpt_path}: its run's `{section}` settings do not build with this version of the code "
            f"({cause}); runs from older versions are re-run with train.py, not loaded"
        ) from None


def load_model(run_cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: str | Path) -> L.LightningModule:
    model = build_from_run(run_cfg, "model", ckpt_path)
    # a run with model.compile=true saved keys of the compiled wrapper (`net._orig_mod.`)
    state = {k.replace("._orig_mod.", "."): v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise UserError(f"ckpt_path={ckpt_path}: weights do not fit the run's model ({detail})") from None
    return model


def cpu_trainer(run_cfg: DictConfig) -> L.Trainer:
    """A quiet CPU Trainer at the run's precision, for scripts that evaluate a run's checkpoints again (no logs,
    checkpoints, summary or bar)."""
    return L.Trainer(
        accelerator="cpu",
        precision=str(run_cfg.trainer.precision),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
