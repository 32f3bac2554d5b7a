"""Sparsity losses against hand computation, schedules exact at their boundaries, bad input."""

import math

import pytest
import torch

from spikestab.regularizers import (
    CosineRamp,
    LinearRamp,
    SparsityLoss,
    StepSchedule,
    l1_rate,
    l2_population,
    make_schedule,
    parse_sparsity,
)


def test_linear_ramp_matches_method_4_2():
    s = LinearRamp(total_epochs=10)  # ramp from epoch 2 to epoch 6
    assert s(0.0) == 0.0 and s(1.999) == 0.0
    assert s(2.0) == 0.0
    assert s(4.0) == 0.5  # halfway
    assert s(3.0) == pytest.approx(0.25)
    assert s(6.0) == 1.0 and s(6.001) == 1.0 and s(10.0) == 1.0


def test_cosine_and_step_boundaries():
    c = CosineRamp(total_epochs=10, start=0.2, end=0.6)
    assert c(1.9) == 0.0 and c(2.0) == 0.0 and c(4.0) == pytest.approx(0.5) and c(6.0) == pytest.approx(1.0)
    assert c(3.0) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    st = make_schedule("step", 10, start=0.3)
    assert isinstance(st, StepSchedule) and st(2.999) == 0.0 and st(3.0) == 1.0
    assert make_schedule("constant", 5)(0.0) == 1.0


def test_l1_rate_by_hand():
    # T=2, B=1, N=2: rates r = [0.5, 1.0]; target 0.25 -> |0.25| and |0.75| -> mean 0.5, times weight 2
    z = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    assert l1_rate(z, 0.25, 2.0).item() == pytest.approx(1.0)


def test_l2_population_by_hand():
    # population rates per step: 1.0 and 0.5; target 0.5 -> 0.25 + 0 = 0.25, times weight 3
    z = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    assert l2_population(z, 0.5, 3.0).item() == pytest.approx(0.75)


def test_sparsity_loss_per_layer_and_schedule():
    z1 = torch.ones(4, 2, 3)
    z2 = torch.zeros(4, 2, 5)
    loss = SparsityLoss("l1_rate", [0.1, 0.2], [1.0, 2.0], LinearRamp(10), n_layers=2)
    val, s = loss([z1, z2], epoch=4.0)
    assert s == 0.5
    assert val.item() == pytest.approx(0.5 * (0.9 + 2.0 * 0.2))
    val0, s0 = loss([z1, z2], epoch=0.0)
    assert s0 == 0.0 and val0.item() == 0.0


def test_parse_sparsity_spec():
    loss = parse_sparsity("l2_population:0.05,0.01:cosine:0.8", n_layers=2, total_epochs=20)
    assert loss.variant == "l2_population" and loss.targets == [0.05, 0.01] and loss.weights == [0.8, 0.8]
    assert isinstance(loss.schedule, CosineRamp) and loss.schedule.total_epochs == 20
    assert isinstance(parse_sparsity("l1_rate:0.01", 3, 10).schedule, LinearRamp)


@pytest.mark.parametrize(
    "spec, word",
    [
        ("l3:0.1", "variant"),
        ("l1_rate", "variant:target"),
        ("l1_rate:abc", "numbers"),
        ("l1_rate:0.1:exp", "schedule"),
        ("l1_rate:0.1,0.2,0.3", "per layer"),
        ("l1_rate:1.5", "targets"),
    ],
)
def test_bad_sparsity_specs(spec, word):
    with pytest.raises(ValueError, match=word):
        parse_sparsity(spec, n_layers=2, total_epochs=10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="end must be > start"):
        LinearRamp(10, 0.6, 0.2)
    with pytest.raises(ValueError, match="total_epochs"):
        make_schedule("linear", 0)
    with pytest.raises(ValueError, match=r"\[T, B, N\]"):
        l1_rate(torch.ones(3, 4))
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        SparsityLoss("l1_rate", [], n_layers=0)
