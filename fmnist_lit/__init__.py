"""fmnist-lit: Fashion-MNIST with PyTorch Lightning + Hydra."""

import time

from omegaconf import OmegaConf

# The entry points (train.py, eval.py, predict.py) import this package before torch and Lightning: metrics.json's
# `wall_seconds` counts from here, so the heavy imports are included (only the interpreter's own start is not).
STARTED = time.time()


def _auto_precision(accelerator: str = "auto") -> str:
    # imported on first use: torch is not needed to compose a config
    from fmnist_lit.hardware import resolve_precision

    return resolve_precision("auto", accelerator)


# `trainer.precision: ${auto_precision:${.accelerator}}` (conf/trainer/default.yaml): registered by importing the
# package, so a config composed anywhere (a notebook, a test) resolves and instantiates
OmegaConf.register_new_resolver("auto_precision", _auto_precision, replace=True)
