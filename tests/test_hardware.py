"""precision=auto: the CPU probes exist, the decision is measured once and cached, and a run records it."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from fmnist_lit import hardware
from fmnist_lit.train import run
from tests.helpers import compose_cfg


def test_cpu_bf16_probes_exist_and_answer():
    # called directly: a renamed probe must fail here, not read as "no bf16" (the bug this replaced)
    assert set(hardware.cpu_bf16_features()) == {"avx512_bf16", "amx"}
    assert all(isinstance(v, bool) for v in hardware.cpu_bf16_features().values())
    assert callable(torch.cpu._is_avx512_bf16_supported) and callable(torch.cpu._is_amx_tile_supported)


def test_no_native_bf16_means_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_features", lambda: {"avx512_bf16": False, "amx": False})
    monkeypatch.setattr(
        hardware, "_step_seconds", lambda: pytest.fail("must not measure without native bf16")
    )
    assert hardware.cpu_precision()[0] == "32-true"


@pytest.mark.parametrize(
    "fp32_ms, bf16_ms, expected",
    [(100.0, 40.0, "bf16-mixed"), (100.0, 95.0, "32-true"), (100.0, 150.0, "32-true")],
)
def test_native_bf16_is_chosen_only_where_measured_faster(monkeypatch, tmp_path, fp32_ms, bf16_ms, expected):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hardware, "cpu_bf16_features", lambda: {"avx512_bf16": True, "amx": False})
    calls = []
    monkeypatch.setattr(hardware, "_step_seconds", lambda: calls.append(1) or (fp32_ms / 1e3, bf16_ms / 1e3))
    assert hardware.cpu_precision()[0] == expected
    # measured once, then read from the cache
    assert hardware.cpu_precision()[0] == expected and len(calls) == 1
    cache = json.loads((tmp_path / "fmnist_lit" / "precision.json").read_text())
    assert list(cache.values()) == [{"fp32_ms": fp32_ms, "bf16_ms": bf16_ms}]


def test_explicit_precision_is_kept():
    assert hardware.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert OmegaConf.create({"p": "${auto_precision:cpu}"}).p in ("32-true", "bf16-mixed")


def test_run_records_the_precision_it_used(tmp_path, tiny_root):
    m = run(compose_cfg(tmp_path, tiny_root, ["model=mlp", "logger=csv", "report.enabled=false"]))
    saved = OmegaConf.load(tmp_path / "config.yaml").trainer.precision
    assert saved in ("32-true", "bf16-mixed") and m["precision"] == saved
