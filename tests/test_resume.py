"""Exact resume: kill -9 anywhere (mid-epoch, between epochs, during validation, during a checkpoint write), resume
from last.ckpt into a new folder, and the run ends bit-identical to one never interrupted; plus the pieces that
make it so (the train loader's order and position, RNG states, atomic writes, the best-checkpoint record)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fmnist_lit.batches import TensorBatches
from fmnist_lit.resume import AtomicCheckpointIO, ResumableCheckpoint, rng_states, set_rng_states
from fmnist_lit.train import run
from tests.helpers import TINY, compose_cfg, make_datamodule, run_script


def labels(batches) -> list[list[int]]:
    return [b[1].tolist() for b in batches]


# -- the train loader: order a function of (seed, epoch), position as state ------------------------------------
def test_order_is_a_function_of_seed_and_epoch():
    x, y = torch.arange(50).view(-1, 1), torch.arange(50)
    epoch = 0
    loader = TensorBatches(x, y, 7, shuffle=True, seed=5, epoch_fn=lambda: epoch)
    orders = []
    for epoch in range(4):
        orders.append(torch.cat([b[1] for b in loader]))
    # epoch e is the e-th permutation drawn from Generator(seed): what every run made before resume existed
    g = torch.Generator().manual_seed(5)
    assert all(torch.equal(order, torch.randperm(50, generator=g)) for order in orders)
    assert len({tuple(o.tolist()) for o in orders}) == 4
    # a fresh loader (a resumed run) asked for epoch 2 gives epoch 2's order; going back replays the draws
    for e in (2, 0, 3):
        fresh = TensorBatches(x, y, 7, shuffle=True, seed=5, epoch_fn=lambda e=e: e)
        assert torch.equal(torch.cat([b[1] for b in fresh]), orders[e])


@pytest.mark.parametrize("world_size", [1, 2])
def test_state_resumes_mid_epoch_with_the_next_batch(world_size):
    x, y = torch.arange(51).view(-1, 1), torch.arange(51)
    epoch = 1

    def loaders(seed: int) -> list[TensorBatches]:
        return [
            TensorBatches(
                x, y, 5, shuffle=True, seed=seed, rank=r, world_size=world_size, epoch_fn=lambda: epoch
            )
            for r in range(world_size)
        ]

    ranks = loaders(seed=5)
    iters = [iter(tb) for tb in ranks]
    for it, _ in ((it, step) for it in iters for step in range(3)):
        next(it)
    states = [tb.state_dict() for tb in ranks]
    assert states[0] == {"seed": 5, "epoch": 1, "batches": 3}
    rest = [labels(it) for it in iters]
    # another process: the seed comes from the state
    resumed = loaders(seed=999)
    for tb, state in zip(resumed, states):
        tb.load_state_dict(state)
    assert [labels(tb) for tb in resumed] == rest
    # DDP: every rank still runs the same number of steps, on disjoint items
    assert len({len(r) for r in rest}) == 1
    items = [{i for batch in r for i in batch} for r in rest]
    assert world_size == 1 or not items[0] & items[-1]
    # the next epoch starts at its first batch, in epoch 2's order
    epoch = 2
    assert labels(resumed[0]) == labels(loaders(seed=5)[0])


def test_state_at_an_epoch_end_resumes_with_the_next_epoch():
    x, y = torch.arange(20).view(-1, 1), torch.arange(20)
    epoch = 0
    tb = TensorBatches(x, y, 5, shuffle=True, seed=1, epoch_fn=lambda: epoch)
    list(tb)
    state = tb.state_dict()
    assert state["batches"] == len(tb)
    epoch = 1
    resumed = TensorBatches(x, y, 5, shuffle=True, seed=1, epoch_fn=lambda: epoch)
    resumed.load_state_dict(state)
    assert labels(resumed) == labels(TensorBatches(x, y, 5, shuffle=True, seed=1, epoch_fn=lambda: 1))


def test_datamodule_carries_the_train_loader_state(tiny_root, tmp_path):
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        global_rank=0,
        world_size=1,
        current_epoch=1,
        overfit_batches=0,
    )
    dm = make_datamodule(tiny_root, tmp_path, batch_size=32)
    dm.setup()
    dm.trainer = trainer
    it = iter(dm.train_dataloader())
    for _ in range(4):
        next(it)
    state = dm.state_dict()
    rest = labels(it)
    # another process, another initial seed: the order must come from the state
    torch.manual_seed(1234)
    dm2 = make_datamodule(tiny_root, tmp_path, batch_size=32)
    # Lightning restores the DataModule before asking for its loaders
    dm2.load_state_dict(state)
    dm2.setup()
    dm2.trainer = trainer
    assert labels(dm2.train_dataloader()) == rest


# -- checkpoints: atomic writes, RNG states, the best record ---------------------------------------------------
class FailingWrite(AtomicCheckpointIO):
    def _dump(self, checkpoint, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "step": 1}, path)
    assert torch.load(path, weights_only=True)["step"] == 1 and os.listdir(path.parent) == ["last.ckpt"]
    with pytest.raises(OSError, match="disk full"):
        FailingWrite().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "step": 2}, path)
    # the name still holds a whole checkpoint
    assert torch.load(path, weights_only=True)["step"] == 1
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3 and os.listdir(path.parent) == ["last.ckpt"]


class CtrlCDuringWrite(AtomicCheckpointIO):
    def _dump(self, checkpoint, f):
        # Ctrl-C as the write starts; torch.save runs on
        os.kill(os.getpid(), signal.SIGINT)
        super()._dump(checkpoint, f)


def test_ctrl_c_during_a_write_is_raised_after_it_with_the_checkpoint_whole(tmp_path):
    # unheld, the KeyboardInterrupt lands inside torch.save's zip writer, which may turn it into a RuntimeError
    # ("unexpected pos"): a traceback instead of train.py's resume hint (seen in the Ctrl-C test)
    path = tmp_path / "last.ckpt"
    # as in a terminal, even under `make ... &`
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            CtrlCDuringWrite().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "step": 7}, path)
        # Ctrl-C works again after the write
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert torch.load(path, weights_only=True)["step"] == 7 and os.listdir(tmp_path) == ["last.ckpt"]


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    states = rng_states()
    torch.save({"rng": states}, tmp_path / "x.ckpt")
    draws = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(torch.load(tmp_path / "x.ckpt", weights_only=True)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


def test_best_record_survives_a_resume_into_a_new_folder(tmp_path):
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    old.mkdir(parents=True)
    (old / "epoch000.ckpt").write_bytes(b"x")
    state = {
        "monitor": "val/acc",
        "dirpath": str(old),
        "best_model_path": str(old / "epoch000.ckpt"),
        "best_model_score": torch.tensor(0.7),
        "current_score": torch.tensor(0.6),
        "best_k_models": {
            str(old / "epoch000.ckpt"): torch.tensor(0.7),
            # not beside last.ckpt
            str(tmp_path / "elsewhere.ckpt"): torch.tensor(0.9),
            # since deleted
            str(old / "deleted.ckpt"): torch.tensor(0.8),
        },
        "kth_best_model_path": str(old / "epoch000.ckpt"),
        "kth_value": torch.tensor(0.7),
        "last_model_path": str(old / "last.ckpt"),
        "rng_states": rng_states(),
    }
    cb = ResumableCheckpoint(dirpath=str(new), monitor="val/acc", mode="max", save_top_k=1)
    cb._resumed_from = old.resolve()
    cb.load_state_dict(state)
    assert cb.best_model_path == str(old / "epoch000.ckpt") and float(cb.best_model_score) == pytest.approx(
        0.7
    )
    assert (
        list(cb.best_k_models) == [str(old / "epoch000.ckpt")]
        and cb.kth_best_model_path == cb.best_model_path
    )
    # the old last.ckpt is never replaced or removed
    assert cb.last_model_path == ""
    # a worse epoch here does not become "best"; a better one does
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, **_: decision)
    )
    assert not cb.check_monitor_top_k(trainer, torch.tensor(0.65))
    assert cb.check_monitor_top_k(trainer, torch.tensor(0.75))


def test_resumed_run_tests_the_best_checkpoint_of_the_run_it_resumed(tmp_path, tiny_root):
    """lr=1e-30 (no change in fp32): every epoch validates the same, so the first stays best; the resumed run must
    test that one (in the old folder), not its own later epoch, and metrics.json must name it."""
    flat = ["model=mlp", "logger=csv", "report.enabled=false", "optimizer.lr=1e-30", "scheduler=null"]
    first = run(compose_cfg(tmp_path / "a", tiny_root, [*flat, "trainer.max_epochs=1"]))
    resumed = run(
        compose_cfg(
            tmp_path / "b",
            tiny_root,
            [*flat, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}"],
        )
    )
    # counted from 1
    assert resumed["best_checkpoint"] == first["best_checkpoint"] and resumed["best_epoch"] == 1
    assert resumed["test_acc"] == first["test_acc"] and resumed["epochs_run"] == 2
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["last.ckpt"]


# -- kill -9 a training process and resume -------------------------------------------------------------------
# 500 training images / batch 32 = 16 steps per epoch, 2 epochs; last.ckpt every 5 steps and at each epoch end.
# Dropout, augmentation (flip and shift) and OneCycle make every RNG draw and step count matter.
RUN = [
    "model=simple_cnn",
    "trainer.max_epochs=2",
    "logger=csv",
    "report.enabled=false",
    "seed=0",
    "data.augment_pad=2",
    "data.augment_flip=true",
    "callbacks.model_checkpoint.save_last_every_n_steps=5",
]
KILL = "+callbacks.kill={_target_: tests.kill_points.KillAt, %s}"
WRITE = "trainer.plugins=[{_target_: tests.kill_points.KillDuringWrite, nth: %d}]"
# name: (override, the step last.ckpt holds when the process dies)
KILL_POINTS = {
    "mid-epoch 0, 2 steps after a save": (KILL % "step: 7", 5),
    "mid-epoch 1": (KILL % "step: 23", 20),
    "between epochs": (KILL % "epoch_start: 1", 16),
    "during validation": (KILL % "validating: 0", 15),
    "during a mid-epoch checkpoint write": (WRITE % 3, 10),
    # writes: steps 5, 10, 15, best, last
    "during the epoch-end write of last.ckpt": (WRITE % 5, 15),
}


def train(tiny_root: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = (f"data.root={tiny_root}", *TINY, *RUN, f"hydra.run.dir={run_dir}", *overrides)
    return run_script("train.py", *args, cwd=run_dir.parent, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_root) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    proc = train(tiny_root, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_and_resume_is_bit_identical(tmp_path, tiny_root, uninterrupted, point):
    override, resume_step = KILL_POINTS[point]
    killed = tmp_path / "killed"
    proc = train(tiny_root, killed, override)
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    # whole, and from where we expect; the write that died is under another name
    assert torch.load(last, weights_only=True)["global_step"] == resume_step
    if "write" in point:
        assert (killed / "checkpoints" / ".last.ckpt.tmp").is_file()

    resumed = tmp_path / "resumed"
    proc = train(tiny_root, resumed, f"ckpt_path={last}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == want["global_step"]
    differ = [k for k, v in want["state_dict"].items() if not torch.equal(v, got["state_dict"][k])]
    assert not differ, f"{len(differ)} of {len(want['state_dict'])} tensors differ"
    m_want = json.loads((uninterrupted / "metrics.json").read_text())
    m_got = json.loads((resumed / "metrics.json").read_text())
    for key in ("test_acc", "test_loss", "best_epoch", "val_acc_best", "epochs_run", "global_steps"):
        assert m_got[key] == m_want[key], key
    # the tested checkpoint is the same epoch's, wherever it was written, and it exists
    assert Path(m_got["best_checkpoint"]).name == Path(m_want["best_checkpoint"]).name
    assert Path(m_got["best_checkpoint"]).is_file()
