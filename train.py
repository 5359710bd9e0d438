"""Train a Fashion-MNIST classifier: `python train.py model=bn_gap trainer.max_epochs=10` (see conf/)."""

from fmnist_lit.cli import help_only, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch and Lightning (seconds to import) are not needed for it
        print_help("train")
    from fmnist_lit.console import quiet_third_party
    from fmnist_lit.train import main

    quiet_third_party()
    run_hydra_app(main)
