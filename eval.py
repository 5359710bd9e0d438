"""Test a checkpoint on the official test set and write its report: `python eval.py ckpt_path=PATH` (conf/eval.yaml)."""

from fmnist_lit.evaluate import main

if __name__ == "__main__":
    main()
