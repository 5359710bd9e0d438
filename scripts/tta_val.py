"""Validation accuracy of checkpoints with and without flip TTA, and with flip + 1 px shift TTA (`model.tta_shift`):
`python scripts/tta_val.py <run>/checkpoints/last.ckpt ...`

Flip TTA (`model.tta_flip`) is a choice made at evaluation, so it can be chosen on validation without training again:
each checkpoint is run on its run's validation split (the 5k carved from the 60k training images, the same split the
run selected on) once with the mirror-image average and once without. Use checkpoints that were not selected with
TTA on (last.ckpt, not the best one), or the comparison favours TTA. The test set is not touched.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from hydra.utils import instantiate

from fmnist_lit.checkpoint import cpu_trainer, load_model, read_checkpoint, run_config
from fmnist_lit.console import quiet_third_party
from fmnist_lit.utils import UserError


def val_metrics(ckpt: Path) -> list[tuple[float, float]]:
    """[(val acc, val loss)] with flip TTA, without TTA, and with flip + 1 px shift TTA, of the checkpoint's weights
    on its run's validation split; the config, checkpoint and data are read once for all passes."""
    _, cfg = run_config(ckpt)
    model = load_model(cfg, read_checkpoint(ckpt), ckpt)
    trainer, dm = cpu_trainer(cfg), instantiate(cfg.data)
    out = []
    for tta_flip, tta_shift in ((True, 0), (False, 0), (True, 1)):
        # read by eval_logits at every validation step
        model.hparams.tta_flip, model.hparams.tta_shift = tta_flip, tta_shift
        m = trainer.validate(model, datamodule=dm, verbose=False)
        if not m:
            raise UserError(f"{ckpt}: its run has no validation split (data.val_size=0)")
        out.append((m[0]["val/acc"], m[0]["val/loss"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpts", nargs="+", type=Path)
    args = ap.parse_args()
    # Lightning's advertisements
    quiet_third_party()
    gains = []
    print(
        "| checkpoint | val acc, flip TTA | no TTA | TTA gain (points) | val loss, flip TTA | no TTA "
        "| val acc, flip + shift TTA |"
    )
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for c in args.ckpts:
        try:
            (on, on_loss), (off, off_loss), (shift, _) = val_metrics(c)
        # not a train.py checkpoint, no validation split, data not found: one error line, the rest still run
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        gains.append(100 * (on - off))
        print(
            f"| `{c}` | {on:.2%} | {off:.2%} | {gains[-1]:+.2f} | {on_loss:.4f} | {off_loss:.4f} | {shift:.2%} |"
        )
    if len(gains) > 1:
        print(
            f"\nTTA gain over {len(gains)} checkpoints: {statistics.fmean(gains):+.2f} ± {statistics.stdev(gains):.2f}"
        )
    raise SystemExit(2 if failed else 0)


if __name__ == "__main__":
    main()
