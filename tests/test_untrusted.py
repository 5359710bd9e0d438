"""A run folder from someone else never runs code: crafted config.yaml files and malicious checkpoints are
refused by train.py (ckpt_path=), eval.py and predict.py with one `error:` line, whatever
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says, and the payload's marker file never appears."""

from __future__ import annotations

import base64
import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist_lit.checkpoint import read_checkpoint, run_config
from fmnist_lit.resume import AtomicCheckpointIO
from fmnist_lit.train import run
from fmnist_lit.utils import UserError
from tests.helpers import TINY, compose_cfg, run_script


class Payload:
    """Unpickling this writes `marker` (exec of a one-liner): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "payload": Payload(marker)}, path)
    return path


# The attack's chain: write a pickle with Path.write_bytes, unpickle it with torch.load(weights_only=False); first
# with the plain names, then reached through attributes of allowed modules (which a prefix allowlist let through).
CHAINS = {
    "plain": ("pathlib.Path.write_bytes", "pathlib.Path", "torch.load"),
    "through-allowed-modules": (
        "fmnist_lit.models.torch.hub.Path.write_bytes",
        "fmnist_lit.models.torch.hub.Path",
        "torch.optim.optimizer.torch.load",
    ),
}


def crafted_run(run: Path, marker: Path, chain: str = "through-allowed-modules", where: str = "net") -> Path:
    """A run folder whose config.yaml builds the chain while the model is instantiated; returns its checkpoint."""
    write, path_cls, load = CHAINS[chain]
    pkl = run / "payload.pkl"
    blob = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    steps = (
        f"[{{_target_: {write}, _args_: [{{_target_: {path_cls}, _args_: ['{pkl}']}}, !!binary {blob}]}}, "
        f"{{_target_: {load}, f: '{pkl}', weights_only: false}}]"
    )
    net = (
        f"{{_target_: fmnist_lit.models.MLP, hidden: {steps}, dropout: 0.0}}"
        if where == "net"
        else "{_target_: fmnist_lit.models.MLP, hidden: [8], dropout: 0.0}"
    )
    data = (
        "{_target_: fmnist_lit.data.FashionMNISTDataModule}"
        if where == "net"
        else f"{{_target_: fmnist_lit.data.FashionMNISTDataModule, root: {steps}}}"
    )
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"model:\n  _target_: fmnist_lit.module.LitClassifier\n  net: {net}\n"
        f"data: {data}\ntrainer: {{precision: 32-true}}\n"
    )
    torch.save({"state_dict": {}}, run / "checkpoints" / "x.ckpt")
    return run / "checkpoints" / "x.ckpt"


def write_config(run: Path, model: str) -> Path:
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"model:\n{model}\ndata: {{_target_: fmnist_lit.data.FashionMNISTDataModule}}\n"
        "trainer: {precision: 32-true}\n"
    )
    return run / "checkpoints" / "x.ckpt"


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("where", ["net", "data"])
def test_crafted_config_is_refused_before_anything_is_built(tmp_path, chain, where):
    marker = tmp_path / "MARKER"
    ckpt = crafted_run(tmp_path / "run", marker, chain, where)
    with pytest.raises(UserError, match="refuses to build"):
        run_config(ckpt)
    assert not marker.exists() and not (tmp_path / "run" / "payload.pkl").exists()


@pytest.mark.parametrize(
    "model",
    [
        # a scheduler that takes a function (a string here: never evaluated, and not on the list either)
        (
            "  _target_: fmnist_lit.module.LitClassifier\n  scheduler: {_target_: torch.optim.lr_scheduler.LambdaLR, "
            "_partial_: true, lr_lambda: \"lambda e: __import__('os').system('true')\"}"
        ),
        # a target under a prefix of an allowed name (a class method that reads a checkpoint with pickle)
        "  _target_: fmnist_lit.module.LitClassifier.load_from_checkpoint\n  checkpoint_path: x.ckpt",
        # a target produced by an interpolation, and an escaped one that becomes an interpolation once resolved
        "  _target_: fmnist_lit.module.LitClassifier\n  net: {_target_: '${oc.env:FMNIST_NO_SUCH_VAR,torch.load}'}",
        "  _target_: fmnist_lit.module.LitClassifier\n  net: \\${other}\n  other: {_target_: torch.load, f: x}",
        "  _target_: fmnist_lit.module.LitClassifier\n  net: {_target_: [torch.load]}",
    ],
)
def test_other_crafted_configs_are_refused(tmp_path, model):
    with pytest.raises(UserError, match="refuses to build"):
        run_config(write_config(tmp_path / "run", model))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=mlp"],
        ["model=simple_cnn", "experiment=simple_cnn_adam"],
        ["model=bn_gap"],
        ["experiment=fast"],
    ],
)
def test_the_projects_own_configs_pass(tmp_path, tiny_root, overrides):
    """Our nets, optimisers and schedulers are on the list: an allowlist that refused our own runs would be useless."""
    cfg = compose_cfg(tmp_path, tiny_root, [*overrides, "trainer.precision=32-true"])
    (tmp_path / "checkpoints").mkdir()
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    _, run_cfg = run_config(tmp_path / "checkpoints" / "x.ckpt")
    model = instantiate(run_cfg.model)
    assert type(model.net).__name__ == cfg.model.net._target_.rsplit(".", 1)[-1]


def test_malicious_checkpoint_is_not_unpickled_whatever_the_environment(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(ckpt)
    # Lightning's own loads (resume, testing the best checkpoint)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, tiny_root) -> Path:
    out = tmp_path_factory.mktemp("mlp_run")
    run(compose_cfg(out, tiny_root, ["model=mlp", "logger=csv", "report.enabled=false"]))
    return out


def bad_checkpoints(d: Path, good: Path, marker: Path, tiny_root: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": b"",
        "random bytes": os.urandom(4096),
        "text": b"model: not a checkpoint\n",
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
    }
    paths = {name: d / f"{name.replace(' ', '_')}.ckpt" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt")
    paths["foreign torch file"] = d / "foreign.pt"
    other = torch.load(good, weights_only=True)
    other["state_dict"] = {
        k: torch.zeros(2, *v.shape[1:]) if v.ndim else v for k, v in other["state_dict"].items()
    }
    torch.save(other, d / "other_model.ckpt")
    paths["another model's checkpoint"] = d / "other_model.ckpt"
    weights = {k: v for k, v in torch.load(good, weights_only=True).items() if k in ("state_dict", "epoch")}
    torch.save(weights, d / "weights_only.ckpt")
    paths["weights only"] = d / "weights_only.ckpt"
    paths["malicious pickle"] = malicious_checkpoint(d / "evil.ckpt", marker)
    return paths


def test_train_ckpt_path_refuses_bad_files_with_one_line(tmp_path, tiny_root, mlp_run, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "MARKER"
    for name, path in bad_checkpoints(
        tmp_path / "bad", mlp_run / "checkpoints" / "last.ckpt", marker, tiny_root
    ).items():
        out = tmp_path / name.replace(" ", "_")
        with pytest.raises(UserError, match=re.escape(f"ckpt_path={path}")) as err:
            run(compose_cfg(out, tiny_root, ["model=mlp", "logger=csv", f"ckpt_path={path}"]))
        assert "\n" not in str(err.value), name
        assert not (out / "checkpoints").exists() and not (out / "config.yaml").exists(), name
    assert not marker.exists()


def cli(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_script(script, *args, env=env)


def assert_one_error_line(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and what in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_entry_points_refuse_a_crafted_config(tmp_path, tiny_root):
    marker = tmp_path / "MARKER"
    ckpt = crafted_run(tmp_path / "run", marker)
    assert_one_error_line(
        cli("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"), "refuses to build"
    )
    assert_one_error_line(cli("predict.py", str(ckpt), str(tmp_path)), "refuses to build")
    assert not marker.exists()


@pytest.mark.slow
def test_entry_points_refuse_a_malicious_checkpoint_whatever_the_environment(tmp_path, tiny_root):
    marker = tmp_path / "MARKER"
    ckpt = malicious_checkpoint(tmp_path / "run" / "checkpoints" / "evil.ckpt", marker)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    assert_one_error_line(
        cli(
            "train.py",
            f"data.root={tiny_root}",
            *TINY,
            f"hydra.run.dir={tmp_path / 'train'}",
            f"ckpt_path={ckpt}",
            env=env,
        ),
        "not a readable PyTorch checkpoint",
    )
    assert_one_error_line(
        cli("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", env=env),
        "not a readable PyTorch checkpoint",
    )
    assert_one_error_line(
        cli("predict.py", str(ckpt), str(tmp_path), env=env), "not a readable PyTorch checkpoint"
    )
    assert not marker.exists()
