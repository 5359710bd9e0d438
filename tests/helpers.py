"""Helpers shared by the tests (fixtures stay in conftest.py)."""

from __future__ import annotations

import subprocess


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """The user-error rule: exit status 2, no traceback, exactly one `error:` line, which says `message`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
