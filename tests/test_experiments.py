"""Every shipped experiment composes to the config its published results came from: a refactor of conf/ (config
groups, new defaults) must not change what `experiment=<name>` trains. tests/data/experiments.json holds each
experiment's composed config; regenerate it only for a deliberate change of a recipe:
`python -m tests.test_experiments` (and re-measure that recipe's results)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from fmnist_lit.cli import CONF_DIR
from tests.helpers import compose_cfg

GOLDEN = Path(__file__).parent / "data" / "experiments.json"
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
# what depends on the machine or the folder, not on the recipe
MACHINE = ("trainer.precision", "data.root")


def composed(name: str | None, out: Path, root: Path) -> dict:
    """The experiment's resolved config, with folders and the machine's precision replaced by placeholders."""
    cfg = compose_cfg(out, root, [f"experiment={name}"] if name else [], tiny=False)
    for key in MACHINE:
        OmegaConf.update(cfg, key, "<machine>")
    # where the run is logged never changes what it trains
    with open_dict(cfg):
        del cfg["logger"]
    text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True)
    return json.loads(text.replace(str(out), "<out>").replace(str(root), "<root>"))


def test_golden_lists_every_experiment():
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(["default", *EXPERIMENTS])


@pytest.mark.parametrize("name", ["default", *EXPERIMENTS])
def test_experiment_config_unchanged(tmp_path, tiny_root, name):
    golden = json.loads(GOLDEN.read_text())[name]
    assert composed(None if name == "default" else name, tmp_path, tiny_root) == golden


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out, root = Path(tmp) / "out", Path(tmp) / "root"
        configs = {
            name: composed(None if name == "default" else name, out, root)
            for name in ["default", *EXPERIMENTS]
        }
    GOLDEN.write_text(json.dumps(configs, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(configs)} configs)", file=sys.stderr)
