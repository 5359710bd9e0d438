"""DDP across nodes, as a cluster launches it (one launch per node: NODE_RANK, MASTER_ADDR, MASTER_PORT), shown on
loopback: two nodes of one device train exactly as one node of two devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

from fmnist_lit import cli
from fmnist_lit.cli import CheckBeforeWriting, set_threads
from tests.helpers import ROOT, TINY, compose_with_hydra

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "experiment=fast", "seed=3", "threads=1"]
QUICK = ["logger=csv", "report.enabled=false", "callbacks.progress_bar=null"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="Lightning's share of one core is the same one thread")
def test_threads_hold_in_every_rank(monkeypatch):
    """Lightning's DDP launcher sets torch's threads to cores // processes per node unless OMP_NUM_THREADS is set:
    `threads` must survive it (a node of 1 device would otherwise take every core, a node of 2 half each)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli, "SHELL_OMP_NUM_THREADS", None)
    before = torch.get_num_threads()
    try:
        set_threads(1)
        _set_num_threads_if_needed(num_processes=1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        # a run without `threads` (the next job of a sweep) gets the shell's setting back
        set_threads(None)
        assert "OMP_NUM_THREADS" not in os.environ
    finally:
        torch.set_num_threads(before)


def test_a_node_of_rank_1_joins_the_folder_of_rank_0(tmp_path, tiny_root, monkeypatch):
    monkeypatch.setenv("NODE_RANK", "1")
    run_dir = tmp_path / "run"
    cfg = compose_with_hydra(tiny_root, [f"hydra.run.dir={run_dir}"])
    job = cfg.hydra.job.name
    CheckBeforeWriting("fmnist_lit.train.check_before_writing").on_run_start(cfg)
    # nothing claimed or made: no `.hydra/` that would make rank 0's claim fail; a log file of its own
    assert not run_dir.exists() and cfg.hydra.output_subdir is None
    assert cfg.hydra.job.name == f"{job}_node_rank_1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    tmp_path: Path, layout: list[str], nodes: list[dict[str, str]]
) -> list[subprocess.CompletedProcess]:
    """train.py launched once per node (`nodes`: each one's environment), without the shell's OMP_NUM_THREADS."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *layout],
            cwd=tmp_path,
            env=env | node,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in nodes
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(600), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_two_nodes_train_as_one_node_of_two_devices(tmp_path, tiny_root):
    args = [f"data.root={tiny_root}", *TINY, *QUICK, *DDP]
    one = launch(tmp_path, [*args, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'one'}"], [{}])
    loopback = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    two = launch(
        tmp_path,
        [*args, "trainer.num_nodes=2", "trainer.devices=1", f"hydra.run.dir={tmp_path / 'two'}"],
        [loopback | {"NODE_RANK": "0"}, loopback | {"NODE_RANK": "1"}],
    )
    for proc in one + two:
        assert proc.returncode == 0, proc.stderr[-3000:]

    want, got = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("one", "two"))
    for key in ("test_acc", "test_loss", "val_acc_best", "global_steps", "threads"):
        assert got[key] == want[key], key
    w, g = (
        torch.load(tmp_path / f / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for f in ("one", "two")
    )
    assert [k for k in w if not torch.equal(w[k], g[k])] == []
    # one run folder: rank 0's record, node 1's log beside rank 0's
    assert {"train.log", "train_node_rank_1.log", ".hydra", "metrics.json"} <= {
        p.name for p in (tmp_path / "two").iterdir()
    }
