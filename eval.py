"""Test a checkpoint on the official test set and write its report: `python eval.py ckpt_path=PATH` (conf/eval.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import help_only, hydra_task, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch and Lightning (seconds to import) are not needed for it
        print_help("eval")
    rewrite_argv("eval.py", "eval")
    # torch and Lightning are imported once the config is composed (a typo is answered before)
    run_hydra_app(hydra_task("eval", "fmnist_lit.evaluate.main"))
