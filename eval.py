"""Test a checkpoint on the official test set and write its report: `python eval.py ckpt_path=PATH` (conf/eval.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import run_hydra_app
from fmnist_lit.console import quiet_third_party
from fmnist_lit.evaluate import main

if __name__ == "__main__":
    rewrite_argv("eval.py", "eval")
    quiet_third_party()
    run_hydra_app(main)
