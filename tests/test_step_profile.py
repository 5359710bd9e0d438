"""benchmarks/step_profile.py on a tiny batch: its FLOP accounting and its row (a smoke test, not a timing check)."""

import json
import shutil
import sys

import pytest

from benchmarks import step_profile, throughput
from tests.helpers import ROOT
from tests.test_own_net import MYNETS, TINY_YAML

TINY = ["--batch", "2", "--steps", "1", "--warmup", "1", "--threads", "1"]


@pytest.mark.parametrize(
    "model, first_input, n_layers",
    [("bn_gap", [2, 1, 28, 28], 5), ("speed_net", [2, 8, 27, 27], 7)],
)
def test_the_layers_account_for_the_step(tmp_path, model, first_input, n_layers):
    results = tmp_path / "results.jsonl"
    assert step_profile.main(["--model", model, *TINY, "--results", str(results)]) == 0
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    layers = row["layers"]
    # every nn.Conv2d and nn.Linear, in forward order, on the input the net gives it (speed_net's first conv
    # follows the 8-channel whitening stem, a functional conv not listed)
    assert len(layers) == n_layers and layers[0]["input"] == first_input
    # the layers' forward FLOPs are the step's (x 3 for forward + backward, per image): none missed or counted
    # twice (the stem's 0.05 MFLOP per image is within the tolerance)
    per_image = 3 * sum(la["fwd_mflop"] for la in layers) / row["batch"]
    assert per_image == pytest.approx(row["step_mflop_per_image"], rel=0.01)
    shares = list(row["ops"].values())
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    assert "aten::convolution_backward" in row["ops"]
    assert row["precision"] == "32-true" or row["precision"] == "bf16-mixed"


def test_a_net_of_ones_own_is_profiled(tmp_path, monkeypatch):
    """README's recipe for one's own net (a module at the repository root, conf/model/<name>.yaml naming it) works
    here as in train.py, though the script starts from benchmarks/."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "mynets.py").write_text(MYNETS)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text(TINY_YAML)
    monkeypatch.setattr(throughput, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    results = tmp_path / "results.jsonl"
    try:
        assert step_profile.main(["--model", "tiny", *TINY, "--results", str(results)]) == 0
    finally:
        sys.modules.pop("mynets", None)
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["model"] == "Tiny" and [la["layer"] for la in row["layers"]] == ["body.0", "body.4"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nosuch"], "nosuch"),
        (["--overrides", "model.nope=1"], "model.nope"),
        (["--precision", "fp16"], "invalid choice"),
    ],
)
def test_bad_input_is_one_usage_line_and_writes_nothing(tmp_path, capsys, args, message):
    results = tmp_path / "results.jsonl"
    with pytest.raises(SystemExit) as e:
        step_profile.main([*args, *TINY, "--results", str(results)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not results.exists()
