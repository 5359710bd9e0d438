"""Test a checkpoint on the official test set and write its report: `python eval.py ckpt_path=PATH` (conf/eval.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import help_only, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch and Lightning (seconds to import) are not needed for it
        print_help("eval")
    rewrite_argv("eval.py", "eval")
    from fmnist_lit.console import quiet_third_party
    from fmnist_lit.evaluate import main

    quiet_third_party()
    run_hydra_app(main)
