"""Aggregate a sweep folder: `python scripts/leaderboard.py outputs/multirun/<date>/<time>`.

Writes leaderboard.md, leaderboard.csv and leaderboard.png into that folder (see fmnist_lit/leaderboard.py) and
prints the table. Exit status 1 when some jobs failed (they are listed), 2 when the folder holds no jobs.
Multiruns write the same files themselves at the end (hydra callback `sweep_summary`); this re-runs it, e.g.
on a sweep that was interrupted or is still running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmnist_lit.leaderboard import find_jobs, write_leaderboard


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path, help="a multirun folder (holds <job>/.hydra/overrides.yaml)")
    a = p.parse_args(argv)
    if not find_jobs(a.sweep_dir):
        print(f"error: no sweep jobs (*/.hydra/overrides.yaml) under {a.sweep_dir}", file=sys.stderr)
        return 2
    _, failed = write_leaderboard(a.sweep_dir)
    print((a.sweep_dir / "leaderboard.md").read_text(), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
