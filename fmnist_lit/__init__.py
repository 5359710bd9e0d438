"""fmnist-lit: Fashion-MNIST with PyTorch Lightning + Hydra."""

import time

# The entry points (train.py, eval.py, predict.py) import this package before torch and Lightning: metrics.json's
# `wall_seconds` counts from here, so the heavy imports are included (only the interpreter's own start is not).
STARTED = time.time()
