"""eval.py: test any checkpoint of this project on the official test set and write the same report/ as train.py,
into its own new run folder.

The checkpoint is read with `torch.load(weights_only=True)` (no arbitrary pickled code runs); the model is rebuilt
from the run's `config.yaml` (`<run>/config.yaml` for `<run>/checkpoints/x.ckpt`) with Hydra's instantiate.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fmnist_lit.report import load_metrics, maybe_write_report
from fmnist_lit.train import CONF_DIR, USER_ERRORS, set_threads
from fmnist_lit.utils import UserError, device_description, resolve_precision, write_json

log = logging.getLogger(__name__)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's plain contents, or UserError saying in one line why it is not one of ours."""
    if not path.is_file():
        raise UserError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # any failure to read means 'not a checkpoint': truncated, not a torch file, pickles weights_only refuses
    except Exception as e:  # noqa: BLE001
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"ckpt_path={path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def run_config(ckpt_path: Path) -> tuple[Path, DictConfig]:
    """`<run>/checkpoints/x.ckpt` -> (`<run>`, the run's resolved config)."""
    run_dir = ckpt_path.resolve().parent.parent
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"ckpt_path={ckpt_path}: no {cfg_path} (expected <run>/checkpoints/<file>.ckpt of a train.py run)")
    cfg = OmegaConf.load(cfg_path)
    if not (cfg.get("model") and cfg.get("data") and cfg.get("trainer")):
        raise UserError(f"{cfg_path}: not a train.py config (needs model, data and trainer)")
    return run_dir, cfg


def load_model(run_cfg: DictConfig, ckpt: dict[str, Any], ckpt_path: Path) -> L.LightningModule:
    model = instantiate(run_cfg.model)
    # a run with model.compile=true saved keys of the compiled wrapper (`net._orig_mod.`)
    state = {k.replace("._orig_mod.", "."): v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise UserError(f"ckpt_path={ckpt_path}: weights do not fit the run's model ({detail})") from None
    return model


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt_path = Path(cfg.ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    src, run_cfg = run_config(ckpt_path)
    out = Path(cfg.paths.output_dir).resolve()
    if out == src or src in out.parents:
        raise UserError(f"hydra.run.dir={out} is inside the evaluated run {src}: choose another folder")
    if (out / "metrics.json").exists():
        raise UserError(f"{out / 'metrics.json'} already exists: choose a new hydra.run.dir")
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.get("threads"))
    model = load_model(run_cfg, ckpt, ckpt_path)
    dm = instantiate(run_cfg.data, **({"root": cfg.data_root} if cfg.get("data_root") else {}))
    precision = resolve_precision(run_cfg.trainer.get("precision", "auto"), cfg.accelerator)  # as the run tested
    trainer = L.Trainer(accelerator=cfg.accelerator, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(out))
    trainer.test(model, datamodule=dm, verbose=False)

    res, trained = model.test_results, load_metrics(src)
    metrics = {
        "test_acc": res["test/acc"], "test_loss": res["test/loss"], "test_precision_macro": res["test/precision"],
        "test_recall_macro": res["test/recall"], "test_f1_macro": res["test/f1"],
        "confusion_matrix": res["confmat"], "best_checkpoint": str(ckpt_path.resolve()), "source_run": str(src),
        "epoch": ckpt.get("epoch"), "best_epoch": trained.get("best_epoch"), "val_acc_best": trained.get("val_acc_best"),
        "epochs_run": trained.get("epochs_run"), "model": run_cfg.model.net._target_.rsplit(".", 1)[-1],
        "params": sum(p.numel() for p in model.net.parameters()), "seed": run_cfg.get("seed"),
        "precision": precision, "device": device_description(cfg.accelerator),
        "command": " ".join(["python", *sys.argv]), "train_command": trained.get("command"),
    }
    OmegaConf.save(run_cfg, out / "config.yaml")  # the evaluated run's config, for the record
    write_json(out / "metrics.json", metrics)
    maybe_write_report(cfg, out, model, dm, metrics, history_dir=src)
    log.info("test/acc=%.4f test/loss=%.4f -> %s", metrics["test_acc"], metrics["test_loss"], out)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
