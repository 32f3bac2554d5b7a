"""Must-show of issue 3, measured mode: each condition hits its MEASURED target on the built network.

Setting: the paper_defaults preset (alpha ~ e^-10, threshold ~ 0.01, per-neuron and trainable) with an
SG dampening of 2 (at the preset's dampening 1 the largest mean-square gain any sharpness reaches is
about 0.97, so condition IV would be infeasible), T = 200 steps, B = 4, random input spikes, input width
= layer width. Widths 64 and 256 cover every reset for LIF and ALIF; 1024 has one default case (LIF,
subtractive reset), the other 1024 cases are marked slow (run them with ``-m slow``).
"""

import functools
import math

import pytest
import torch

from spikestab.models import SNNClassifier
from spikestab.neurons import RESETS
from spikestab.presets import paper_config, paper_defaults
from spikestab.stability import stabilize

RATES = {"subtract": 0.05, "multiplicative": 0.1, "multiplicative_all": 0.2, "none": 0.3}
# what stabilize promises in measured mode (its defaults rate_tol=0.01, ratio_tol=0.1): the rate within 0.01 of
# the target, the variance ratio within a factor 1.1
RATE_TOL, RATIO_FACTOR = 0.01, 1.1
# the cases whose recurrent mean (set by I) gives the Jacobian an outlier eigenvalue above 1.05 at width 256:
# their growth follows log(outlier gain), as the report predicts, instead of 0
OUTLIER_CASES = {
    ("lif", "multiplicative_all"),
    ("alif", "subtract"),
    ("alif", "multiplicative"),
    ("alif", "multiplicative_all"),
    ("alif", "none"),
}
FAST_1024 = {("lif", "subtract")}
CASES = [
    pytest.param(net, reset, width, marks=[pytest.mark.slow] if width == 1024 and (net, reset) not in FAST_1024 else [])
    for width in (64, 256, 1024)
    for net in ("lif", "alif")
    for reset in RESETS
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(net: str, reset: str, width: int) -> SNNClassifier:
    cfg = paper_config(width, 5, (width,), net=net, reset=reset, dropout=0.0, dampening=2.0)
    return paper_defaults(SNNClassifier(cfg), seq_len=200, seed=11)


def _inputs(width: int, rate: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(12)
    return (torch.rand(200, 4, width, generator=gen) < rate).float()


@functools.cache
def run(net: str, reset: str, width: int, scenario: str) -> dict:
    """Stabilise a fresh model with one scenario and return its layer report (cached across tests)."""
    torch.manual_seed(0)
    if scenario == "I+II,IV":  # IV after I and II, at input rate 0.3
        model, x = _model(net, reset, width), _inputs(width, 0.3)
        first = stabilize(model, x, ("I", "II")).layers[0]
        return {"I+II": first, "IV": stabilize(model, x, ("IV",)).layers[0]}
    conds = {"I+II": ("I", "II"), "III": ("III",), "IV": ("IV",)}[scenario]
    return {scenario: stabilize(_model(net, reset, width), _inputs(width, RATES[reset]), conds).layers[0]}


@pytest.mark.parametrize("net,reset,width", CASES)
def test_after_i_rate_and_after_ii_variance_ratio(net, reset, width):
    for layer in (run(net, reset, width, "I+II")["I+II"], run(net, reset, width, "I+II,IV")["I+II"]):
        assert abs(layer.measurements["firing_rate"] - 0.5) <= RATE_TOL
        assert 1 / RATIO_FACTOR <= layer.measurements["variance_ratio"] <= RATIO_FACTOR
        assert layer.condition("I").feasible and layer.condition("II").feasible


@pytest.mark.parametrize("net,reset,width", CASES)
def test_after_iii_worst_case_bounded_and_no_explosion(net, reset, width):
    layer = run(net, reset, width, "III")["III"]
    assert layer.measurements["worst_case_gain"] <= 1 + 1e-6
    assert layer.measurements["growth_per_step"] <= 0.0


MULT_ALL_VANISHES = (
    "multiplicative_all zeroes the Jacobian rows of neurons that just spiked while the just-reset neurons "
    "sit at the SG peak: consecutive Jacobians are correlated and LIF gradients vanish although the "
    "mean-square gain is 1"
)


@pytest.mark.parametrize("net,reset,width", CASES)
def test_after_iv_alone_mean_square_gain_and_growth(net, reset, width, request):
    layer = run(net, reset, width, "IV")["IV"]
    assert layer.condition("IV").feasible
    assert abs(layer.measurements["mean_square_gain"] - 1) <= 0.1
    if width >= 256:
        if net == "lif" and reset == "multiplicative_all":
            request.applymarker(pytest.mark.xfail(strict=True, reason=MULT_ALL_VANISHES))
        assert abs(layer.measurements["growth_per_step"]) <= 0.02


@pytest.mark.parametrize("net,reset,width", CASES)
def test_after_i_ii_then_iv_mean_square_gain(net, reset, width):
    layer = run(net, reset, width, "I+II,IV")["IV"]
    assert layer.condition("IV").feasible  # at dampening 2 every case reaches a gain of 1 after I and II
    assert abs(layer.measurements["mean_square_gain"] - 1) <= 0.1


@pytest.mark.parametrize("net,reset,width", [c for c in CASES if c.values[2] >= 256])
def test_after_i_ii_then_iv_growth(net, reset, width):
    layer = run(net, reset, width, "I+II,IV")["IV"]
    iv = layer.condition("IV")
    mode_gain = iv.extra["uniform_mode_gain"]
    if width == 256:
        assert (mode_gain > 1.05) == ((net, reset) in OUTLIER_CASES), mode_gain
    if mode_gain > 1.05:
        # the recurrent mean set by I gives J an outlier eigenvalue the mean-square gain does not see;
        # the report predicts the growth from it, and that prediction is what is asserted
        assert "outlier" in iv.note
        assert abs(layer.measurements["growth_per_step"] - math.log(mode_gain)) <= 0.15
    else:
        assert abs(layer.measurements["growth_per_step"]) <= 0.02
