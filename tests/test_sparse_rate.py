"""The recipe's sparse target rate as an option (``stabilize(sparse_rate=)``, ``--sparse-rate`` on train and
stabilize): D aims at it in the sparse regime, low targets are met (D's tolerance is relative below 0.03),
the default leaves every run as it was, and a rate that would be ignored is refused before any work."""

import json

import pytest
import torch

from spikestab.cli import main
from spikestab.data.randman import spiking_randman
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons import LIF
from spikestab.stability import stabilize
from spikestab.stability.drive import condition_d
from spikestab.stability.regime import SPARSE_RATE, TIMING_SPARSE_RATE, sparse_target
from spikestab.stability.report import rate_warning
from spikestab.train.config import TrainConfig
from train_tiny import tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")


def _model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = SNNClassifier(SNNConfig(40, 4, hidden_sizes=(64, 64), dropout=0.0))
    x = (torch.rand(100, 16, 40) < 0.1).float()
    return model, x


@pytest.mark.parametrize("rate", [0.003, 0.01])
def test_condition_d_meets_a_low_target_instead_of_silencing_the_layer(rate):
    """With an absolute tolerance of 0.01 any rate below 0.005 'met' a target of 0.003, so D took the top
    of its threshold range and the layer fell silent; the tolerance is now at most a third of the target."""
    torch.manual_seed(1)
    layer = LIF(40, 64, recurrent=True)
    x = (torch.rand(100, 16, 40) < 0.1).float()
    res = condition_d(layer, x, rate=rate)
    assert res.feasible and abs(res.measured - rate) <= rate / 3
    with torch.no_grad():  # the layer itself, run on x from rest, fires at the rate D reports
        assert float(layer(x)[0].mean()) == pytest.approx(res.measured, rel=1e-6)


def test_recipe_aims_at_the_sparse_rate_given():
    rates = {}
    for sparse_rate in (SPARSE_RATE, 0.01):
        model, x = _model_and_batch()
        report = stabilize(model, x, regime="sparse", sparse_rate=sparse_rate)
        assert report.regime["regime"] == "sparse"
        rates[sparse_rate] = [layer.condition("D").target for layer in report.layers]
        for layer in report.layers:
            d = layer.condition("D")
            assert abs(d.measured - sparse_rate) <= sparse_rate / 3
    assert rates == {SPARSE_RATE: [SPARSE_RATE] * 2, 0.01: [0.01] * 2}


def test_default_sparse_rate_without_a_timing_code_changes_nothing():
    """Unmeasured (forced sparse, no probe) the default is the old constant 0.03, and D's tolerance at 0.03
    is the old 0.01: the same thresholds as before."""
    chosen = []
    for kwargs in ({}, {"sparse_rate": SPARSE_RATE}):
        model, x = _model_and_batch()
        stabilize(model, x, regime="sparse", **kwargs)
        chosen.append([layer.threshold.detach().clone() for layer in model.stack.layers])
    assert all(torch.equal(a, b) for a, b in zip(*chosen))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_sparse_rate_out_of_range_is_refused_before_anything_changes(bad):
    model, x = _model_and_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"sparse_rate must be in the open interval \(0, 1\)"):
        stabilize(model, x, regime="sparse", sparse_rate=bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"regime": "dense"}, "the regime is dense"),
        ({"conditions": ()}, "the recipe is not applied"),
        ({"conditions": ("I", "II")}, "the recipe is not applied"),
        ({"threshold": 0.5}, "condition D is left out"),
    ],
)
def test_train_config_refuses_a_sparse_rate_it_would_ignore(kwargs, says):
    with pytest.raises(ValueError, match=f"sparse_rate=0.01 is condition D's target.*{says}"):
        TrainConfig(sparse_rate=0.01, **kwargs)
    TrainConfig(sparse_rate=0.01, regime="sparse")  # used: accepted
    assert "sparse_rate" in TrainConfig(sparse_rate=0.01).user_set
    TrainConfig(**kwargs)  # not set: nothing to refuse


def test_train_cli_uses_the_sparse_rate_and_refuses_it_where_ignored(tmp_path, capsys):
    out = tmp_path / "run"
    flags = tiny_train("--epochs", "1", "--no-figures", "--regime", "sparse", "--sparse-rate", "0.01")
    assert main(["train", *flags, "--out", str(out)]) == 0
    report = json.loads((out / "stability.json").read_text())["report"]
    assert [layer["conditions"]["D"]["target"] for layer in report["layers"]] == [0.01, 0.01]
    assert json.loads((out / "config.json").read_text())["sparse_rate"] == 0.01
    refused = tmp_path / "refused"
    assert main(["train", *tiny_train("--regime", "dense", "--sparse-rate", "0.01"), "--out", str(refused)]) == 2
    assert "would be ignored here (the regime is dense)" in capsys.readouterr().err
    assert not refused.exists()
    assert main(["train", *tiny_train("--sparse-rate", "0"), "--out", str(refused)]) == 2
    assert "sparse_rate" in capsys.readouterr().err and not refused.exists()


def test_stabilize_cli_sparse_rate(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["stabilize", "--layers", "1x32", "--steps", "60", "--regime", "sparse", "--sparse-rate", "0.01"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["layers"][0]["conditions"]["D"]["target"] == 0.01
    assert main(["stabilize", "--layers", "1x32", "--regime", "dense", "--sparse-rate", "0.01"]) == 2
    assert "--sparse-rate is condition D's target" in capsys.readouterr().err
    assert main(["stabilize", "--layers", "1x32", "--sparse-rate", "2"]) == 2
    assert "--sparse-rate must be in the open interval (0, 1)" in capsys.readouterr().err


def test_sparse_target_rule():
    assert sparse_target(None, timing_code=True) == TIMING_SPARSE_RATE == 0.003
    assert sparse_target(None, timing_code=False) == SPARSE_RATE == 0.03
    assert sparse_target(0.01, timing_code=True) == sparse_target(0.01, timing_code=False) == 0.01  # given: kept


def _randman_probe():
    """Randman (every channel fires once: the class is in the spike times, a timing code), time first."""
    latencies, labels = spiking_randman(n_classes=4, n_units=50, n_steps=100, dim=2, samples_per_class=128)
    x = torch.zeros(100, len(labels), 50)
    x[torch.as_tensor(latencies).long(), torch.arange(len(labels))[:, None], torch.arange(50)] = 1.0
    return x, torch.as_tensor(labels)


@pytest.mark.parametrize("given, target", [(None, TIMING_SPARSE_RATE), (SPARSE_RATE, SPARSE_RATE)])
def test_a_measured_timing_code_starts_at_the_timing_rate_unless_one_is_given(given, target):
    """The sparse-rate study's rule R: where the probe finds a timing code, D aims at 0.003; a rate given
    explicitly is kept."""
    x, y = _randman_probe()
    torch.manual_seed(3)
    model = SNNClassifier(SNNConfig(50, 4, hidden_sizes=(64, 64), dropout=0.0))
    report = stabilize(model, x[:, :32], probe=(x, y), sparse_rate=given)
    assert report.regime["regime"] == "sparse" and report.regime["timing_code"]
    for layer in report.layers:
        d = layer.condition("D")
        assert d.target == target and abs(d.measured - target) <= target / 3


def test_a_sparse_start_the_recipe_meant_is_not_called_silent():
    """Below SILENT_RATE only where D aimed there (a timing code's 0.003): silent then means under half of D's
    target; without a target (or with 0.03 / 0.5) the bound stays SILENT_RATE."""
    assert rate_warning(0, 0.002, "D", target=TIMING_SPARSE_RATE) is None
    assert "nearly silent: initial firing rate 0.001 < 0.0015" in rate_warning(0, 0.001, "D", target=TIMING_SPARSE_RATE)
    for target in (None, SPARSE_RATE, 0.5):
        assert "nearly silent" in rate_warning(0, 0.005, "D", target=target)
    x, y = _randman_probe()
    torch.manual_seed(3)
    report = stabilize(SNNClassifier(SNNConfig(50, 4, hidden_sizes=(64, 64), dropout=0.0)), x[:, :32], probe=(x, y))
    assert not any("silent" in note for layer in report.layers for note in layer.notes)
