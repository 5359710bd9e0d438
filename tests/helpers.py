"""Helpers shared by the tests (fixtures stay in conftest.py): the real config composed tiny, the entry points run
as a user runs them, and the user-error rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fmnist_lit.cli import CONF_DIR, OPTIONAL_GROUPS

ROOT = Path(__file__).resolve().parent.parent

# the settings that make a run of the real config take seconds on the tiny synthetic data
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


def train_cli(tmp_path: Path, root: Path, *overrides: str, run_dir: Path | None = None, **kw):
    """`python train.py` on `root`, forced tiny, from tmp_path into `run_dir` (default tmp_path/run):
    (the finished process, run_dir). `kw`: run_script's."""
    run_dir = run_dir or tmp_path / "run"
    overrides = (f"data.root={root}", *TINY, f"hydra.run.dir={run_dir}", *overrides)
    return run_script("train.py", *overrides, cwd=tmp_path, **kw), run_dir


def compose_with_hydra(root: Path, overrides: list[str], tiny: bool = True) -> DictConfig:
    """conf/train.yaml as the CLI composes it (with its `hydra` node), forced tiny unless `tiny=False`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"data.root={root}", *(TINY if tiny else []), *overrides],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    return cfg


def compose_cfg(tmp_path: Path, root: Path, overrides: list[str] = (), tiny: bool = True) -> DictConfig:
    """The real conf/train.yaml, forced tiny (unless `tiny=False`), with outputs in tmp_path."""
    # `group=null` switches a group off, as on the command line (cli.run_hydra_app): Hydra's own spelling is `~group`
    overrides = [f"~{o[:-5]}" if o.endswith("=null") and o[:-5] in OPTIONAL_GROUPS else o for o in overrides]
    cfg = compose_with_hydra(root, overrides, tiny)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    # compose does not set it; ${hydra:...} needs it
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        del cfg.hydra
    return cfg


def make_datamodule(root: Path, tmp_path: Path, **overrides):
    """The DataModule of the real conf/data/fmnist.yaml on `root`, with `overrides` as constructor arguments."""
    from hydra.utils import instantiate

    return instantiate(compose_cfg(tmp_path, root).data, **overrides)


def eval_cfg(tmp_path: Path, root: Path, ckpt: Path) -> DictConfig:
    """What eval.py's config holds for `ckpt` on `root`, CPU, one thread, the report into tmp_path/out."""
    return OmegaConf.create(
        {
            "ckpt_path": str(ckpt),
            "data": {"root": str(root)},
            "accelerator": "cpu",
            "threads": 1,
            "report": {"enabled": True},
            "paths": {"output_dir": str(tmp_path / "out")},
        }
    )


def fake_job(
    sweep: Path, num: int, overrides: list[str], metrics: dict | str | None = None, error: str | None = None
) -> None:
    """Job `num` of a sweep as the leaderboard reads it: its overrides; metrics.json (a dict, or text written as it
    is); error.txt (`error`, then a traceback's place)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if error is not None:
        (job / "error.txt").write_text(error + "\n\nTraceback ...")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """The user-error rule: exit status 2, no traceback, exactly one `error:` line, which says `message`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
