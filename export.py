"""Export a checkpoint to ONNX or TorchScript: `python export.py ckpt_path=PATH format=onnx|torchscript`
(conf/export.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import help_only, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch (seconds to import) is not needed for it
        print_help("export")
    rewrite_argv("export.py", "export")
    from fmnist_lit.export import main

    run_hydra_app(main)
