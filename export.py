"""Export a checkpoint to ONNX or TorchScript: `python export.py ckpt_path=PATH format=onnx|torchscript`
(conf/export.yaml)."""

from fmnist_lit.arguments import rewrite_argv
from fmnist_lit.cli import help_only, hydra_task, print_help, run_hydra_app

if __name__ == "__main__":
    if help_only():
        # torch (seconds to import) is not needed for it
        print_help("export")
    rewrite_argv("export.py", "export")
    # torch and Lightning are imported once the config is composed (a typo is answered before)
    run_hydra_app(hydra_task("export", "fmnist_lit.export.main"))
