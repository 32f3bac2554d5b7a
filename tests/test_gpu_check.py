"""benchmarks/gpu_check.py runs through on the CPU (``--device cpu --tiny``), so that it cannot rot before
a GPU is lent (issue 24): its JSON holds every section, the CPU's fused torch loop agrees with the C loops
to rounding, and one epoch of the Trainer on the device stays finite."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikestab.kernels.devices import path_for
from spikestab.neurons import RESETS

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_on_the_cpu(tmp_path, one_thread):
    out = tmp_path / "gpu_check.json"
    assert _module().main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"]
    assert {(r["neuron"], r["reset"]) for r in result["parity"]} == {(n, r) for n in ("LIF", "ALIF") for r in RESETS}
    assert all(r["ok"] and r["device_path"] == "fused" for r in result["parity"])
    assert [(r["task"], r["precision"]) for r in result["training"]] == [
        ("sl-mnist", "32"),
        ("shd", "32"),
        ("sl-mnist", "bf16"),
    ]
    for r in result["training"]:  # one epoch of the Trainer on the device, every step finite
        assert r["epochs"] == 1 and r["steps"] == -(-r["train_samples"] // r["batch_size"]) and r["finite"]
        assert r["device"] == "cpu" and r["path"] == (path_for("cpu") if r["precision"] == "32" else "fused")
    timed = [r for r in result["timing"] if "skipped" not in r]
    assert {r["workload"] for r in timed} == {"a-lif", "a-alif"}
    assert all(r["fwd_bwd_s"] > 0 for r in timed)


def test_a_missing_gpu_is_refused_before_any_work(tmp_path):
    """Without CUDA, --device cuda stops with the reason and writes nothing."""
    if torch.cuda.is_available():
        pytest.skip("checks the refusal where torch sees no CUDA device")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda", "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--device: device 'cuda' asks for CUDA" in proc.stderr
    assert not out.exists()
