"""benchmarks/step_profile.py on a tiny batch: its FLOP accounting and its row (a smoke test, not a timing check)."""

import json

import pytest

from benchmarks import step_profile


@pytest.mark.parametrize(
    "model, first_input, n_layers",
    [("bn_gap", [2, 1, 28, 28], 5), ("speed_net", [2, 8, 27, 27], 7)],
)
def test_the_layers_account_for_the_step(tmp_path, model, first_input, n_layers):
    results = tmp_path / "results.jsonl"
    args = ["--model", model, "--batch", "2", "--steps", "1", "--warmup", "1"]
    assert step_profile.main([*args, "--threads", "1", "--results", str(results)]) == 0
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
