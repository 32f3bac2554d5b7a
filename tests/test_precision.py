"""Mixed precision (issue 24 item 2), on the CPU's bfloat16 autocast: the fused kernel runs its time loop
in float32 inside ``torch.autocast`` (forward and backward: before, its backward failed on a bfloat16
current gradient times float32 spikes, and its voltages were stored in bfloat16), and ``spikestab train
--precision bf16`` trains on the torch loop, refused where the C loops would run."""

import json

import pytest
import torch

from spikestab.cli import main
from spikestab.dynamics import initial_state
from spikestab.kernels import run_fused, run_reference
from spikestab.neurons import ALIF, LIF, RESETS
from spikestab.train.checkpoint import load_checkpoint
from train_tiny import tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")
T, B, N, H = 30, 4, 20, 16


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("reset", RESETS)
def test_the_fused_loop_runs_in_float32_under_autocast(cls, reset):
    """The fused kernel handed a bfloat16 current (what autocast's projection gives) inside bfloat16
    autocast equals the plain autograd loop run in float32 on that current, outside autocast: float32
    spikes and voltages, the recurrent weight's gradient, and the current's gradient (in bfloat16)."""
    torch.manual_seed(0)
    layer = cls(N, H, reset=reset, backend="fused")
    x = (torch.rand(T, B, N) < 0.3).float()
    dyn, w_hh = layer.dynamics(), layer.recurrent_weight().detach()
    bf16 = torch.nn.functional.linear(x, layer.weight_ih, layer.bias).detach().to(torch.bfloat16)
    readout = torch.linspace(-1.0, 1.0, H)
    runs = []
    for current, w, kernel, mixed in ((bf16, w_hh, run_fused, True), (bf16.float(), w_hh, run_reference, False)):
        current, w = current.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            z, v, _ = kernel(current, w, dyn, initial_state(B, H, cls is ALIF, current), True)
        ((z + 0.1 * v) * readout).sum().backward()
        runs.append({"z": z, "v": v, "g_current": current.grad, "g_w": w.grad})
    fused, reference = runs
    assert fused["v"].dtype == torch.float32 and fused["g_current"].dtype == torch.bfloat16
    assert torch.equal(fused["z"], reference["z"])
    torch.testing.assert_close(fused["v"], reference["v"])
    torch.testing.assert_close(fused["g_w"], reference["g_w"], rtol=1e-4, atol=1e-4)  # summation order
    torch.testing.assert_close(fused["g_current"], reference["g_current"].to(torch.bfloat16))


TINY = tiny_train("--epochs", "1", "--no-figures", "--backend", "fused")


def test_train_in_bf16_on_the_torch_loop(tmp_path):
    runs = {}
    for precision in ("32", "bf16"):
        out = tmp_path / precision
        assert main(["train", *TINY, "--precision", precision, "--out", str(out)]) == 0
        runs[precision] = json.loads((out / "results.json").read_text())
        runs[precision]["weights"] = load_checkpoint(out / "checkpoint.pt")["model"]
    bf16, full = runs["bf16"], runs["32"]
    assert bf16["config"]["precision"] == "bf16" and bf16["kernel"] == "fused"
    assert all(v.dtype == full["weights"][k].dtype for k, v in bf16["weights"].items())  # float32 weights
    assert all(torch.isfinite(v).all() for v in bf16["weights"].values())
    assert any(not torch.equal(v, full["weights"][k]) for k, v in bf16["weights"].items())  # it did round
    assert abs(bf16["test"]["loss"] - full["test"]["loss"]) < 0.1


def test_bf16_on_the_c_loops_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    args = [a for a in TINY if a not in ("--backend", "fused")]
    assert main(["train", *args, "--precision", "bf16", "--out", str(out)]) == 2  # backend auto: the C loops
    err = capsys.readouterr().err
    assert "precision 'bf16' runs on the torch time loop, but backend 'auto' on cpu takes the C loops" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--precision", "fp16"], "precision must be one of ['32', 'bf16'], got 'fp16'"),
        (["--precision", "bf16", "--net", "slstm", "--conditions", "none"], "net 'slstm' trains in precision '32'"),
    ],
)
def test_bad_precision_is_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["train", *TINY, *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
