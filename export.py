"""Export a checkpoint to ONNX or TorchScript: `python export.py ckpt_path=PATH format=onnx|torchscript`
(conf/export.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import run_hydra_app
from fmnist_lit.export import main

if __name__ == "__main__":
    rewrite_argv("export.py", "export")
    run_hydra_app(main)
