"""The command lines of eval.py, export.py and predict.py, read before Hydra or torch sees them.

eval.py and export.py take `key=value` over their own config (conf/eval.yaml, conf/export.yaml), as train.py does;
predict.py takes the checkpoint and images as plain arguments (`predict_args`). So that either habit works where it
is unambiguous:
- a lone checkpoint (`python eval.py run/checkpoints/last.ckpt`) means `ckpt_path=...`, and predict.py takes
  `ckpt_path=...` as its checkpoint;
- no checkpoint at all is one usage line, not OmegaConf's report of a missing value;
- a key the script does not have (`model=mlp`, train.py's) is refused as such, instead of Hydra's advice to add
  it with `+model=mlp`.
Light on imports: this runs before torch is loaded, so `--help` and usage mistakes are answered at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fmnist_lit.utils import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# below this top-class probability predict.py flags a prediction low-confidence
MIN_CONFIDENCE = 0.5


def own_keys(config_name: str) -> set[str]:
    """The dotted leaf keys of conf/<config_name>.yaml a user may set (not `hydra.*`, not `paths.*`)."""
    reference = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text())
    return _leaves({k: v for k, v in reference.items() if k not in ("hydra", "defaults", "paths")})


def _leaves(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return {k for key, v in node.items() for k in _leaves(v, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


def no_such_setting(script: str, override: str, known: set[str]) -> str:
    """The error line for a key `script` does not take."""
    return (
        f"{override}: {script} has no such setting (it takes {', '.join(sorted(known))}; see {script} --help)"
    )


def usage(script: str) -> str:
    return (
        f"usage: python {script} ckpt_path=<run>/checkpoints/<file>.ckpt [key=value ...], or "
        f"python {script} <checkpoint> [key=value ...]; python {script} --help lists the keys"
    )


def _is_path(arg: str) -> bool:
    # a file name may hold `=` (`outputs/.../model=mlp/...`): an existing path is a path
    return "=" not in arg or Path(arg).exists()


def hydra_argv(script: str, config_name: str, argv: list[str]) -> list[str]:
    """`argv` (the arguments after the script) as Hydra overrides: a lone checkpoint becomes `ckpt_path=...`.
    UserError for no checkpoint, two of them, or a key conf/<config_name>.yaml does not have."""
    # Hydra's flags (--help, --cfg job, -m, ...), some followed by a value: Hydra reads such a command line itself
    if any(a.startswith("-") for a in argv):
        return argv
    paths = [a for a in argv if _is_path(a)]
    overrides = [a for a in argv if a not in paths]
    known = own_keys(config_name)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.split(".")[0].split("/")[0] not in ("hydra", "paths") and key not in known:
            raise UserError(no_such_setting(script, o, known))
    given = [o for o in overrides if o.lstrip("+").startswith("ckpt_path=")]
    if len(paths) > 1 or (paths and given):
        raise UserError(f"{' '.join(paths + given)}: one checkpoint at a time; {usage(script)}")
    if not paths and not given:
        raise UserError(f"no checkpoint given; {usage(script)}")
    return [*(f"ckpt_path={p}" for p in paths), *overrides]


def rewrite_argv(script: str, config_name: str) -> None:
    """sys.argv as hydra_argv reads it, for the entry point `script`; a mistake is one `error:` line, exit 2."""
    try:
        sys.argv[1:] = hydra_argv(script, config_name, sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


class _Parser(argparse.ArgumentParser):
    """argparse with its complaints as one `error:` line (usage included), exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} ({' '.join(self.format_usage().split())})", file=sys.stderr)
        sys.exit(2)


def _positional(argv: list[str]) -> list[str]:
    """eval.py's and export.py's form `ckpt_path=X` accepted too: it becomes the first argument."""
    keyed = [a for a in argv if a.startswith("ckpt_path=")]
    if len(keyed) != 1:
        return argv
    return [keyed[0].partition("=")[2], *(a for a in argv if a != keyed[0])]


def predict_args(argv: list[str]) -> argparse.Namespace:
    """predict.py's command line. `--help` and a usage mistake (one `error:` line, exit status 2) end the
    process here."""
    ap = _Parser(prog="predict.py", description="Classify images with a fmnist-lit checkpoint.")
    ap.add_argument(
        "ckpt_path",
        help="a checkpoint of a train.py run (<run>/checkpoints/*.ckpt) or export.py's .onnx; "
        "ckpt_path=PATH (eval.py's form) works too",
    )
    ap.add_argument("images", nargs="+", help="image files and/or folders of images")
    ap.add_argument(
        "--invert",
        choices=["auto", "yes", "no"],
        default="auto",
        help="make the object light on dark like Fashion-MNIST (auto: if the background is light)",
    )
    ap.add_argument("--csv", help="also write the predictions (all ten probabilities) to this CSV file")
    ap.add_argument(
        "--save-inputs", metavar="DIR", help="write the 28x28 images the model received, and a mosaic"
    )
    ap.add_argument(
        "--min-confidence",
        type=float,
        default=MIN_CONFIDENCE,
        help="flag predictions whose top probability is below this (default: %(default)s)",
    )
    args = ap.parse_args(_positional(argv))
    if not 0 <= args.min_confidence <= 1:
        ap.error(f"--min-confidence {args.min_confidence}: must be a probability in [0, 1]")
    return args
