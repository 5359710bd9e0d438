"""Train a Fashion-MNIST classifier: `python train.py model=bn_gap trainer.max_epochs=10` (see conf/)."""

from fmnist_lit.cli import run_hydra_app
from fmnist_lit.console import quiet_third_party
from fmnist_lit.train import main

if __name__ == "__main__":
    quiet_third_party()
    run_hydra_app(main)
