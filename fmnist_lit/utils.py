"""Small helpers for a run: the user-error type, the metrics file (config checks: fmnist_lit/validate.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


class UserError(ValueError):
    """Bad input from the command line or config: reported as one line, no traceback."""


def to_jsonable(x: Any) -> Any:
    """Plain JSON values; NaN and inf (not JSON) become null."""
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.tolist() if x.ndim else x.item())
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Strict JSON (allow_nan=False), readable by any parser."""
    Path(path).write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
