"""Small helpers for a run: the user-error type, the metrics file (config checks: fmnist_lit/validate.py)."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

# a JSON list of numbers (or nulls) that json.dumps(indent=2) spread over lines: a confusion matrix row. JSON strings hold no
# raw newline, so a list inside a string (`"model.net.widths=[32,64]"`) never matches
_NUMBER = r"(?:[-+.\deE]+|null)"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


class UserError(ValueError):
    """Bad input from the command line or config: reported as one line, no traceback."""


def tidy_float(x: float) -> float:
    """`x` without binary noise. A number of at most 9 significant digits, or a whole one, is kept as it is. A
    float32 value (metrics computed in float32) becomes the shortest decimal that is still that float32 (0.9145,
    not 0.9144999980926514); any other float is rounded to 9 significant digits, what any float32 needs (20.0, not
    19.999999999999996). The same float always gives the same number, and a tidied number stays as it is."""
    short = float(f"{x:.9g}")
    if short == x or x.is_integer():
        return x
    if _as_float32(x) == x:
        return next(y for y in (float(f"{x:.{d}g}") for d in range(1, 10)) if _as_float32(y) == x)
    return short


def _as_float32(x: float) -> float:
    """The float32 nearest to `x`, as a Python float (struct: no torch or numpy import for the light callers)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    # beyond float32's range: not a float32
    except OverflowError:
        return math.nan


def to_jsonable(x: Any) -> Any:
    """Plain JSON values, floats tidied (tidy_float); NaN and inf (not JSON) become null."""
    # a tensor or an array (duck-typed: this module imports neither torch nor numpy)
    if hasattr(x, "tolist") and hasattr(x, "ndim"):
        return to_jsonable(x.tolist())
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
