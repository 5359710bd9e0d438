"""Small helpers for a run: the user-error type, the metrics file (config checks: fmnist_lit/validate.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

# a JSON list of numbers (or nulls) that json.dumps(indent=2) spread over lines: a confusion matrix row. JSON strings hold no
# raw newline, so a list inside a string (`"model.net.widths=[32,64]"`) never matches
_NUMBER = r"(?:[-+.\deE]+|null)"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


class UserError(ValueError):
    """Bad input from the command line or config: reported as one line, no traceback."""


def tidy_float(x: float) -> float:
    """`x` without binary noise: a value that is a float32 (metrics computed in float32) becomes the shortest
    decimal that is still that float32 (0.9145, not 0.9144999980926514); any other float keeps 8 significant
    digits, a float32's precision and one more (20.0, not 19.999999999999996). The same float always gives the
    same number."""
    single = np.float32(x)
    if float(single) == x:
        return float(str(single))
    return float(f"{x:.8g}")


def to_jsonable(x: Any) -> Any:
    """Plain JSON values, floats tidied (tidy_float); NaN and inf (not JSON) become null."""
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.tolist() if x.ndim else x.item())
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, float):
        return tidy_float(x) if math.isfinite(x) else None
    return x


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Strict JSON (allow_nan=False), readable by any parser; a list of numbers (a confusion matrix row) on one
    line."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)
    Path(path).write_text(text + "\n")
