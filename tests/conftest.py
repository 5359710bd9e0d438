"""Shared fixtures: tiny synthetic IDX datasets (no network) and the real config composed tiny."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fmnist_lit.cli import CONF_DIR, OPTIONAL_GROUPS
from fmnist_lit.synthetic import make_images, write_tiny_root  # noqa: F401 (tests import make_images)

ROOT = Path(__file__).resolve().parent.parent


def run_script(
    script: str,
    *args: str,
    cwd: Path | None = None,
    timeout: int = 300,
    env: dict[str, str] | None = None,
    patch: str = "",
) -> subprocess.CompletedProcess:
    """`python <script> args` as a user runs it (`script` relative to the repo root), output captured, Python's
    warnings silenced. `patch`: Python run first in the same process (a fault injected)."""
    if patch:
        # the repo first on sys.path, as `python train.py` has it (`-c` would import an installed fmnist_lit)
        code = (
            f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{patch}\nimport runpy\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        cmd = [sys.executable, "-c", code, str(ROOT / script), *args]
    else:
        cmd = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_root(tmp_path_factory.mktemp("tiny_data"))


TINY = [
    "data.val_size=100",
    "data.batch_size=32",
    "data.eval_batch_size=100",
    "data.check_md5=false",
    "data.download=false",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    "callbacks.model_summary=null",
    # the progress bar draws nothing when stdout is not a terminal
    "threads=1",
]


def compose_cfg(tmp_path: Path, root: Path, overrides: list[str] = (), tiny: bool = True) -> DictConfig:
    """The real conf/train.yaml, forced tiny (unless `tiny=False`), with outputs in tmp_path."""
    # `group=null` switches a group off, as on the command line (cli.run_hydra_app): Hydra's own spelling is `~group`
    overrides = [f"~{o[:-5]}" if o.endswith("=null") and o[:-5] in OPTIONAL_GROUPS else o for o in overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"data.root={root}", *(TINY if tiny else []), *overrides],
            return_hydra_config=True,
        )
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    # compose does not set it; ${hydra:...} needs it
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def cfg_tiny(tmp_path, tiny_root) -> DictConfig:
    return compose_cfg(tmp_path, tiny_root)


def make_datamodule(root: Path, tmp_path: Path, **overrides):
    """The DataModule of the real conf/data/fmnist.yaml on `root`, with `overrides` as constructor arguments."""
    from hydra.utils import instantiate

    return instantiate(compose_cfg(tmp_path, root).data, **overrides)
