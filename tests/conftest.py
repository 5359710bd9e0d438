"""Shared fixtures: tiny synthetic IDX datasets (no network). Shared helpers are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist_lit.synthetic import write_tiny_root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_root(tmp_path_factory.mktemp("tiny_data"))
