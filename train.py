"""Train a Fashion-MNIST classifier: `python train.py model=bn_gap trainer.max_epochs=10` (see conf/)."""

from fmnist_lit.train import main

if __name__ == "__main__":
    main()
