"""Validation accuracy of several runs' checkpoints alone and of their ensemble (the mean of their softmax outputs):
what averaging n independently trained nets buys, measured on the validation split they share.

    python scripts/ensemble_val.py <run_a>/checkpoints/last.ckpt <run_b>/checkpoints/last.ckpt [...]

Each checkpoint is evaluated as eval.py evaluates it (the run's precision and TTA), on its run's validation split
(the 5k carved from the 60k training images by `data.split_seed`); the runs must share that split, or the
ensemble would be scored on images some of its members trained on. The test set is not touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from fmnist_lit.checkpoint import cpu_trainer, load_model, read_checkpoint, run_config
from fmnist_lit.console import quiet_third_party
from fmnist_lit.data import ImageSet
from fmnist_lit.utils import UserError


def val_probs(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(softmax outputs (N, 10) on the validation split, its labels (N,), the split's indices into the 60k)."""
    # the file first: a missing one is named as such, not as a run without its config
    weights = read_checkpoint(ckpt)
    _, cfg = run_config(ckpt)
    model = load_model(cfg, weights, ckpt)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    if len(dm.val_x) == 0:
        raise UserError(f"{ckpt}: its run has no validation split (data.val_size=0)")
    logits = cpu_trainer(cfg).predict(model, datamodule=ImageSet(dm, dm.val_x, dm.val_y))
    return torch.cat(logits).softmax(-1), dm.val_y, dm.val_idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpts", nargs="+", type=Path)
    args = ap.parse_args()
    # Lightning's advertisements
    quiet_third_party()
    print("| checkpoint | val acc |\n|---|---|")
    # labels and split indices of the first checkpoint scored: every later one must have the same split
    members, labels, split, first, failed = [], None, None, None, 0
    for c in args.ckpts:
        try:
            probs, y, idx = val_probs(c)
            if split is not None and not torch.equal(idx, split):
                raise UserError(
                    f"{c}: its run's validation split differs from {first}'s (data.split_seed, data.val_size)"
                )
        # not a train.py checkpoint, no validation split, another split: one error line, the rest still run
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        if split is None:
            labels, split, first = y, idx, c
        members.append(probs)
        print(f"| `{c}` | {(probs.argmax(1) == y).float().mean().item():.2%} |")
    if len(members) > 1:
        ensemble = torch.stack(members).mean(0)
        print(
            f"| ensemble of the {len(members)} | {(ensemble.argmax(1) == labels).float().mean().item():.2%} |"
        )
    raise SystemExit(2 if failed else 0)


if __name__ == "__main__":
    main()
