"""Classify new images: `python predict.py CKPT image.png [folder/ ...] [--csv out.csv]`."""

import sys

from fmnist_lit.arguments import predict_args

if __name__ == "__main__":
    # `--help` and usage mistakes are answered here: torch and Lightning (seconds to import) are not needed for them
    args = predict_args(sys.argv[1:])
    from fmnist_lit.console import quiet_third_party
    from fmnist_lit.predict import run

    quiet_third_party()
    sys.exit(run(args))
