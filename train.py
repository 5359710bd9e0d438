"""Train a Fashion-MNIST classifier: `python train.py model=bn_gap trainer.max_epochs=10` (see conf/)."""

from fmnist_lit.cli import help_only, hydra_task, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch and Lightning (seconds to import) are not needed for it
        print_help("train")
    # torch and Lightning are imported once the config is composed (a typo is answered before)
    run_hydra_app(hydra_task("train", "fmnist_lit.train.main"))
