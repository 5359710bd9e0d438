"""Shared fixtures: tiny synthetic IDX datasets (no network). Shared helpers are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist_lit.synthetic import make_images, write_tiny_root  # noqa: F401 (test_faults.py until it moves)
from tests.helpers import ROOT, TINY, compose_cfg, run_script  # noqa: F401 (test_faults/test_tensorboard.py)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_root(tmp_path_factory.mktemp("tiny_data"))
