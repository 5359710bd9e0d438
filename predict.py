"""Classify new images: `python predict.py CKPT image.png [folder/ ...] [--csv out.csv]`."""

import sys

from fmnist_lit.console import quiet_third_party
from fmnist_lit.predict import main

if __name__ == "__main__":
    quiet_third_party()
    sys.exit(main())
