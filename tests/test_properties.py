"""Property-based tests (hypothesis) of the SG family and the validators: random valid parameters never
give a non-finite value or gradient (float32, float16, bfloat16 voltages; float32 layers), random invalid
ones always raise ValueError. Examples are derandomized (the same on every run) and few, for CI."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikestab
from spikestab.surrogate import SHAPES, SurrogateGradient
from spikestab.train import TrainConfig
from spikestab.train.config import LR_MAX

CI = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

positive = st.floats(1e-3, 1e3)  # the range the SG parameters are promised finite over
tails = st.floats(1.01, 50.0)
not_positive = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.sampled_from([math.nan, math.inf, -math.inf]))
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def _voltages(dtype: torch.dtype):
    """Centred voltages representable in ``dtype`` (float16 ends at 65504), zeros included."""
    bound = 6e4 if dtype == torch.float16 else 1e6
    return st.lists(st.one_of(st.floats(-bound, bound), st.floats(-1e-3, 1e-3), st.just(0.0)), min_size=1, max_size=32)


@CI
@given(
    data=st.data(),
    shape=st.sampled_from(sorted(SHAPES)),
    dtype=st.sampled_from(sorted(DTYPES)),
    dampening=positive,
    sharpness=positive,
    learnable=st.booleans(),
)
def test_valid_sg_parameters_give_finite_values_and_gradients(data, shape, dtype, dampening, sharpness, learnable):
    dt = DTYPES[dtype]
    tail = data.draw(tails) if shape == "q-pseudospike" else None
    values = data.draw(_voltages(dt))
    sg = SurrogateGradient(shape, dampening=dampening, sharpness=sharpness, tail=tail, learnable=learnable)
    v = torch.tensor(values, dtype=dt, requires_grad=True)
    z = sg(v)
    assert z.dtype == dt and set(z.tolist()) <= {0.0, 1.0}
    assert torch.equal(z, (v.detach() > 0).to(dt))  # Heaviside forward, whatever the SG
    z.sum().backward()
    assert torch.isfinite(v.grad).all()
    # the SG is dampening * f(sharpness v) with 0 <= f <= 1, f(0) = 1 (in float32; then cast to dtype)
    assert (v.grad.float() >= 0).all() and (v.grad.float() <= dampening * (1 + 1e-2)).all()
    if learnable:
        assert torch.isfinite(sg.dampening.grad).all() and torch.isfinite(sg.sharpness.grad).all()
    u = torch.tensor(values, dtype=torch.float32) * sharpness
    for value in (sg.shape_fn(u), sg.antiderivative(u), sg.antiderivative_sq(u)):
        assert torch.isfinite(value).all()
    assert math.isfinite(sg.mean_square_integral()) and sg.mean_square_integral() > 0


@CI
@given(shape=st.sampled_from(sorted(SHAPES)), which=st.sampled_from(["dampening", "sharpness"]), bad=not_positive)
def test_invalid_sg_parameters_raise(shape, which, bad):
    with pytest.raises(ValueError, match=which):
        SurrogateGradient(shape, **{which: bad})


@CI
@given(bad=st.one_of(st.floats(max_value=1.0, allow_nan=False), not_finite))
def test_invalid_tails_raise(bad):
    with pytest.raises(ValueError, match="tail must be a finite q > 1"):
        SurrogateGradient("q-pseudospike", tail=bad)


@CI
@given(shape=st.sampled_from(sorted(set(SHAPES) - {"q-pseudospike"})), tail=tails)
def test_a_tail_for_another_shape_raises(shape, tail):
    with pytest.raises(ValueError, match="tail is only accepted by the q-pseudospike shape"):
        SurrogateGradient(shape, tail=tail)


@CI
@given(name=st.one_of(st.just(""), st.text(max_size=12).map(lambda s: "x" + s)))  # no shape or alias starts with x
def test_unknown_shape_names_raise(name):
    with pytest.raises(ValueError, match="shape must be one of"):
        SurrogateGradient(name)


# ---------------------------------------------------------------- layers
@CI
@given(
    cls=st.sampled_from([spikestab.LIF, spikestab.ALIF]),
    tau=st.floats(1.0, 1e3),
    threshold=st.floats(1e-2, 1e2),
    dampening=st.floats(1e-3, 10.0),
    sharpness=st.floats(1e-2, 1e2),
    reset=st.sampled_from(["subtract", "multiplicative", "multiplicative_all", "none"]),
    beta_adapt=st.floats(0.0, 10.0),
    tau_adapt=st.floats(1.0, 1e3),
    seed=st.integers(0, 2**16),
)
def test_valid_layer_parameters_give_finite_voltages_and_gradients(
    cls, tau, threshold, dampening, sharpness, reset, beta_adapt, tau_adapt, seed
):
    torch.manual_seed(seed)
    kw = {"beta_adapt": beta_adapt, "tau_adapt": tau_adapt} if cls is spikestab.ALIF else {}
    layer = cls(
        6,
        5,
        tau=tau,
        threshold=threshold,
        reset=reset,
        backend="reference",
        spike_fn=SurrogateGradient("fast-sigmoid", dampening=dampening, sharpness=sharpness),
        **kw,
    )
    x = (torch.rand(12, 3, 6) < 0.4).float()
    z, v, _ = layer(x, return_voltage=True)
    assert torch.isfinite(v).all() and set(z.unique().tolist()) <= {0.0, 1.0}
    (v.sum() + z.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@CI
@given(
    cls=st.sampled_from([spikestab.LIF, spikestab.ALIF, spikestab.LIFCell, spikestab.ALIFCell]),
    which=st.sampled_from(["tau", "threshold"]),
    bad=not_positive,
)
def test_invalid_layer_parameters_raise(cls, which, bad):
    with pytest.raises(ValueError, match=which):
        cls(3, 4, **{which: bad})


@CI
@given(cls=st.sampled_from([spikestab.ALIF, spikestab.ALIFCell]), data=st.data())
def test_invalid_adaptation_parameters_raise(cls, data):
    which = data.draw(st.sampled_from(["beta_adapt", "tau_adapt"]))
    bad = data.draw(
        st.one_of(st.floats(max_value=-1e-9, allow_nan=False), not_finite) if which == "beta_adapt" else not_positive
    )
    with pytest.raises(ValueError, match=which):
        cls(3, 4, **{which: bad})


# ---------------------------------------------------------------- the training config
POSITIVE_FIELDS = ["lr", "tau", "threshold", "dampening", "sharpness", "clip_norm"]
INT_FIELDS = ["epochs", "batch_size", "eval_batch_size", "seq_len", "time_repeat", "checkpoint_every"]


@CI
@given(
    lr=st.floats(1e-8, LR_MAX),
    tau=st.floats(1e-3, 1e4),
    threshold=positive,
    dropout=st.floats(0.0, 0.999),
    epochs=st.integers(1, 10**6),
    batch=st.integers(1, 10**5),
    weight_decay=st.floats(0.0, 0.999),
    init_rate=st.one_of(st.none(), st.floats(1e-3, 0.999)),
)
def test_valid_train_configs_are_accepted(lr, tau, threshold, dropout, epochs, batch, weight_decay, init_rate):
    cfg = TrainConfig(
        lr=lr,
        tau=tau,
        threshold=threshold,
        dropout=dropout,
        epochs=epochs,
        batch_size=batch,
        weight_decay=weight_decay,
        init_rate=init_rate,
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # and they survive the JSON round trip


@CI
@given(data=st.data())
def test_invalid_train_configs_raise_naming_the_field(data):
    kind = data.draw(st.sampled_from(["positive", "int", "fraction", "lr_max"]))
    if kind == "positive":
        field = data.draw(st.sampled_from(POSITIVE_FIELDS))
        bad = data.draw(not_positive)
    elif kind == "int":
        field = data.draw(st.sampled_from(INT_FIELDS))
        bad = data.draw(st.one_of(st.integers(max_value=0), st.booleans(), st.floats(1.5, 100.0)))
    elif kind == "fraction":
        field = data.draw(st.sampled_from(["dropout", "input_dropout", "weight_decay"]))
        bad = data.draw(st.one_of(st.floats(1.0, 1e6), st.floats(max_value=-1e-9, allow_nan=False)))
    else:
        field, bad = "lr", data.draw(st.floats(LR_MAX * 1.01, 1e38))
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: bad})
