"""Classify new images: `python predict.py CKPT image.png [folder/ ...] [--csv out.csv]`."""

import sys

from fmnist_lit.predict import main

if __name__ == "__main__":
    sys.exit(main())
