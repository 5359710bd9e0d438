"""Training images/s of `model=bn_gap` beside the seed notebook's Keras CNN (004) it was ported from, on the
same CPU in one invocation, and their ratio (torch img/s / Keras img/s).

torch: benchmarks/throughput.py's measurement of bn_gap on path c (in-memory uint8 data, --precision, default
auto, channels_last, Lightning) and, with `--paths c e`, path e (the same in a plain PyTorch loop). Keras: the
notebook's model and compile (Adam, sparse categorical cross-entropy, accuracy), `model.fit` at its batch size
(Keras's default, 32: the notebook passes none) on the first training images scaled to [0, 1], with
TensorFlow's intra- and inter-op threads set to torch's. Both sides run --warmup untimed steps, then --windows
windows of --window steps; each reports the median window and the ratio is of the medians. The Keras side runs
in a subprocess of --keras-python, so that the two frameworks' thread pools never share a process; TensorFlow
is not one of the project's dependencies:

    python3 -m venv ~/tfvenv && ~/tfvenv/bin/pip install tensorflow-cpu

Rows go to --results (default benchmarks/results.jsonl) as throughput.py's do; --synthetic (tiny fake data, a
few steps) is a smoke test and writes only where --results says.

python benchmarks/keras_baseline.py --keras-python ~/tfvenv/bin/python --threads 2 --repeats 3
python benchmarks/keras_baseline.py --keras-python ~/tfvenv/bin/python --paths c e --precision 32-true
python benchmarks/keras_baseline.py --torch-only --synthetic --results /tmp/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Keras's `fit` default: the notebook sets no batch size
KERAS_BATCH = 32
# exit status 0 where the interpreter finds TensorFlow, without importing it (seconds)
HAS_TF = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is None)"
INSTALL = "python3 -m venv ~/tfvenv && ~/tfvenv/bin/pip install tensorflow-cpu, then --keras-python "
INSTALL += "~/tfvenv/bin/python"


def seed_cnn(keras):
    """The seed notebook's Keras CNN (004): conv 64/128/256, each with BatchNorm and ReLU, 2x2 max-pooling
    between them, global average pooling, dense 128 + dropout, softmax over the 10 classes.

    (B, 28, 28, 1) -> (B, 28, 28, 64) -pool-> (B, 14, 14, 128) -pool-> (B, 7, 7, 256) -GAP-> (B, 256)
    -> (B, 10)
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(64, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(128, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2),
            layers.Conv2D(256, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(10, activation="softmax"),
        ]
    )


def keras_side(raw: str, batch: int, steps: int, intra: int, inter: int) -> dict[str, Any]:
    """Trains seed_cnn for `steps` steps of `batch` images from the IDX files in `raw`, as the notebook
    compiles and fits it: perf_counter (s) after every step, and what was measured. Runs in --keras-python."""
    # TensorFlow is imported only here: the rest of this module runs without it
    import keras
    import numpy as np
    import tensorflow as tf

    # before any op runs: the pools are fixed at their first use
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    # IDX: a 16-byte header, then (N, 28, 28) uint8 images; labels: an 8-byte header, then (N,) uint8
    x = np.frombuffer((Path(raw) / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    y = np.frombuffer((Path(raw) / "train-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    # the notebook's preprocessing: a channel axis, (N, 28, 28, 1), and pixels scaled to [0, 1]
    x = x.reshape(-1, 28, 28, 1)[: steps * batch].astype("float32") / 255.0
    model = seed_cnn(keras)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []
    # the notebook's fit on the timed images, without the progress bar its console draws (leaving it out
    # favours Keras)
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda step, logs: times.append(time.perf_counter())
    )
    model.fit(x, y[: steps * batch], batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
    return {
        "times": times,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "jit_compile": bool(model.jit_compile),
        "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
    }


def keras_row(raw: Path, args) -> dict[str, Any]:
    """A Keras measurement in a subprocess of --keras-python with torch's thread counts: a throughput row."""
    # in this project's Python, as side_by_side
    import torch

    from benchmarks.throughput import window_rates

    spec = {"raw": str(raw), "batch": args.batch, "steps": args.warmup + args.window * args.windows}
    spec |= {"intra": torch.get_num_threads(), "inter": torch.get_num_interop_threads()}
    cmd = [args.keras_python, str(Path(__file__).resolve()), "--keras-worker", json.dumps(spec)]
    # CPU only, as the torch side; TensorFlow's start-up notes silenced
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the Keras side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.splitlines()[-1])
    rates = window_rates(out.pop("times"), args.batch, args.warmup, args.window)
    return {
        "kind": "throughput",
        "model": "keras_seed004",
        "path": "keras",
        "precision": "32-true",
        "batch": args.batch,
        "img_s": round(statistics.median(rates), 1),
        "windows_img_s": [round(r, 1) for r in rates],
        "threads": spec["intra"],
        "inter_op_threads": spec["inter"],
    } | out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--keras-python", default=sys.executable, help="a Python with TensorFlow (default: this one)"
    )
    p.add_argument("--torch-only", action="store_true", help="measure bn_gap alone (no TensorFlow needed)")
    p.add_argument(
        "--paths", nargs="+", default=["c"], choices=["c", "e"], help="throughput.py's torch paths"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "32-true", "bf16-mixed"],
        help="of the torch paths (Keras trains in fp32, as the notebook)",
    )
    p.add_argument("--batch", type=int, default=KERAS_BATCH, help="both sides (default: the notebook's)")
    p.add_argument(
        "--torch-batch",
        type=int,
        help="bn_gap's batch instead of --batch (128: as `python train.py` runs it)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (>= 1)")
    p.add_argument("--window", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows per measurement")
    p.add_argument("--repeats", type=int, default=1, help="measure both sides this often, interleaved")
    p.add_argument("--threads", type=int, help="torch's threads and TensorFlow's (default: every core)")
    p.add_argument("--synthetic", action="store_true", help="tiny fake data, a few steps: a smoke test")
    p.add_argument("--results", type=Path, help="JSON lines appended here (as throughput.py's --results)")
    p.add_argument("--keras-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.command = "python benchmarks/keras_baseline.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.keras_worker:
        print(json.dumps(keras_side(**json.loads(args.keras_worker))))
        return 0
    args.torch_batch = args.torch_batch or args.batch
    if min(args.batch, args.torch_batch, args.warmup, args.window, args.windows, args.repeats) < 1:
        p.error("--batch, --torch-batch, --warmup, --window, --windows and --repeats must be >= 1")
    # torch is imported from here on only: the Keras worker above may run in a Python without it
    from benchmarks.throughput import SYNTHETIC_INTO_REPO, synthetic_into_repo

    if synthetic_into_repo(args, ROOT):
        p.error(SYNTHETIC_INTO_REPO)
    if not args.torch_only:
        check_keras_python(args.keras_python)
    return side_by_side(args)


def check_keras_python(python: str) -> None:
    """One error line, before any measurement, where `python` cannot run or has no TensorFlow (a fraction of a
    second: TensorFlow is found, not imported)."""
    from fmnist_lit.cli import fail

    try:
        found = subprocess.run([python, "-c", HAS_TF], capture_output=True, check=False)
    except OSError as e:
        fail(f"--keras-python {python}: {e.strerror}; install TensorFlow: {INSTALL}")
    if found.returncode != 0:
        fail(f"{python} has no TensorFlow; install it: {INSTALL}")


def side_by_side(args) -> int:
    """bn_gap on each torch path, then the Keras CNN, --repeats times: one row each, then a table of the
    medians."""
    # torch, Lightning and Hydra here only: the Keras worker above may run in a Python without them
    from benchmarks.throughput import RESULTS, SYNTHETIC, print_table, record, summary, throughput
    from fmnist_lit.cli import fail, set_threads
    from fmnist_lit.fashion_mnist import prepare_raw
    from fmnist_lit.synthetic import write_tiny_root
    from fmnist_lit.utils import UserError

    def recorded(row: dict[str, Any]) -> dict[str, Any]:
        # a side that ran out of training images timed fewer windows: refused before the first row is written
        # (the torch side, measured first, has the fewer images)
        if len(row["windows_img_s"]) < args.windows:
            fail(f"too few training images for --warmup + --window x --windows steps of {row['batch']}")
        return record(row, args)

    set_threads(args.threads)
    args.accelerator, args.device_overrides = "cpu", ["trainer.accelerator=cpu"]
    if not args.synthetic:
        args.results = args.results or RESULTS
    with tempfile.TemporaryDirectory(prefix="fmnist_keras_") as tmp:
        out = Path(tmp)
        root = write_tiny_root(out / "data") if args.synthetic else ROOT / "data"
        args.data_overrides = [f"data.root={root}", *(SYNTHETIC.split() if args.synthetic else [])]
        if args.synthetic:
            args.warmup, args.window, args.windows = 1, 2, 2
        # bn_gap as the project configures it, at its own batch size
        torch_args = argparse.Namespace(**vars(args), overrides=[])
        torch_args.batch = args.torch_batch
        try:
            # the IDX files the Keras side reads (the torch side's data module checks the same folder)
            raw = prepare_raw(root, download=not args.synthetic, check_md5=not args.synthetic)
        except UserError as e:
            fail(str(e))

        rows = []
        for i in range(args.repeats):
            for path in args.paths:
                row = throughput("bn_gap", path, args.precision, torch_args, out / f"{i}_{path}")
                rows.append(recorded(row))
            if not args.torch_only:
                rows.append(recorded(keras_row(raw, args)))
    lines = summary(rows)
    keras = next((ln for ln in lines if ln["path"] == "keras"), None)
    for ln in lines:
        ln["vs_keras"] = f"{ln['median'] / keras['median']:.2f}x" if keras else "-"
    print_table(lines, "model path precision img/s median vs_keras windows")
    print(f"batch: bn_gap {args.torch_batch}, Keras {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
