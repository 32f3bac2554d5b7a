"""Paper mode reproduces the published values (docs/theory.md) under the paper_defaults preset."""

import math

import pytest
import torch

from spikestab.models import SNNClassifier
from spikestab.presets import paper_config, paper_defaults
from spikestab.stability import stabilize

pytestmark = pytest.mark.usefixtures("one_thread")


def _paper_model(n_in: int, width: int, surrogate: str = "fast-sigmoid") -> SNNClassifier:
    cfg = paper_config(n_in, 10, (width, width), surrogate=surrogate, dropout=0.0)
    return paper_defaults(SNNClassifier(cfg), seq_len=100, seed=5)


def _spikes(n_in: int, steps: int = 100, rate: float = 0.1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(6)
    return (torch.rand(steps, 4, n_in, generator=gen) < rate).float()


@pytest.mark.parametrize("n_in,width,expected", [(80, 128, 0.204), (700, 256, 0.144)])
def test_paper_dampening_is_4_over_sqrt_3n(n_in, width, expected):
    model = _paper_model(n_in, width)
    report = stabilize(model, _spikes(n_in), ("III",), mode="paper")
    for layer in report.layers:
        damp = layer.condition("III").chosen_mean
        assert abs(damp - expected) <= 0.01
        assert abs(damp - 4 / math.sqrt(3 * width)) <= 0.01
        torch.testing.assert_close(model.stack.layers[layer.index].spike_fn.dampening, layer.condition("III").chosen)


@pytest.mark.parametrize("conditions", [("IV",), ("III", "IV")])
def test_paper_condition_iv_is_infeasible_under_the_preset(conditions):
    model = _paper_model(80, 128, surrogate="exponential")
    report = stabilize(model, _spikes(80), conditions, mode="paper", measure=False)
    for layer in report.layers:
        iv = layer.condition("IV")
        assert not iv.feasible and iv.fallback
        assert -1.0 < iv.extra["residual_at_sharpness_1"] < -0.95  # published: about -0.99
        assert iv.chosen == pytest.approx(0.3)  # the argmin over the code's bracket [0.3, 1.6]


def test_paper_mode_runs_all_conditions_and_reports_measurements():
    model = _paper_model(80, 64)
    report = stabilize(model, _spikes(80), ("I", "II", "III", "IV"), mode="paper", jacobian_steps=2)
    data = report.to_dict()
    assert data["mode"] == "paper"
    for layer in data["layers"]:
        assert set(layer["conditions"]) == {"I", "II", "III", "IV"}
        assert layer["measurements"]["firing_rate"] is not None
        for cond in layer["conditions"].values():
            assert cond["measured"] is not None or cond["condition"] == "II"
