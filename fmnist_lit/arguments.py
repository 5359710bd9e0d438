"""The command-line forms of eval.py and export.py, read before Hydra sees them.

Both take `key=value` over their own config (conf/eval.yaml, conf/export.yaml), as train.py does; predict.py
takes the checkpoint and images as plain arguments. So that either habit works where it is unambiguous:
- a lone checkpoint (`python eval.py run/checkpoints/last.ckpt`) means `ckpt_path=...`;
- no checkpoint at all is one usage line, not OmegaConf's report of a missing value;
- a key the script does not have (`model=mlp`, train.py's) is refused as such, instead of Hydra's advice to add
  it with `+model=mlp`.
Light on imports: this runs before torch is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from fmnist_lit.utils import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


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
