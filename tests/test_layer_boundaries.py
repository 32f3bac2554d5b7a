"""LIF/ALIF layers and cells at their boundaries (issue 15): every numeric parameter checked at
construction (finite, in range, the right per-neuron length), conflicting arguments refused, and the
input dtype rule (bool / integer spikes converted, other float precisions refused with what to call)."""

import math
import re

import pytest
import torch

import spikestab
from spikestab.neurons.cuba import CubaLIF
from spikestab.surrogate import SurrogateGradient

LAYERS = [spikestab.LIF, spikestab.ALIF, spikestab.LIFCell, spikestab.ALIFCell]
ADAPTIVE = [spikestab.ALIF, spikestab.ALIFCell]


@pytest.mark.parametrize("cls", ADAPTIVE)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta_adapt=float("nan")), r"beta_adapt must be finite and >= 0 \(accepted range \[0, inf\)\), got nan"),
        (dict(beta_adapt=float("inf")), r"beta_adapt must be finite and >= 0"),
        (dict(beta_adapt=-0.5), r"beta_adapt must be finite and >= 0 .*got -0.5"),
        (dict(beta_adapt=torch.tensor([1.8, float("nan"), 1.8, 1.8])), r"beta_adapt must be finite"),
        (dict(beta_adapt=torch.ones(3)), r"beta_adapt must be a scalar or a tensor of shape \(4,\)"),
        (dict(tau_adapt=float("nan")), r"tau_adapt must be finite and > 0"),
        (dict(tau_adapt=-1.0), r"tau_adapt must be finite and > 0"),
        (dict(tau_adapt=torch.ones(5) * 100), r"tau_adapt must be a scalar or a tensor of shape \(4,\)"),
    ],
)
def test_adaptation_parameters_are_checked_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(3, 4, **kwargs)


@pytest.mark.parametrize("cls", ADAPTIVE)
def test_good_adaptation_parameters_are_kept(cls):
    layer = cls(3, 4, beta_adapt=0.0, tau_adapt=torch.tensor([50.0, 100.0, 150.0, 200.0]))
    assert torch.equal(layer.beta_adapt, torch.zeros(4))
    torch.testing.assert_close(layer.rho, torch.exp(-1.0 / torch.tensor([50.0, 100.0, 150.0, 200.0])))


@pytest.mark.parametrize("cls", LAYERS)
def test_tau_and_alpha_together_are_refused(cls):
    with pytest.raises(ValueError, match=r"give tau or alpha, not both \(got tau=10.0 and alpha=0.9\)"):
        cls(3, 4, tau=10.0, alpha=0.9)
    # either alone is accepted, and the default is tau = 20 steps
    torch.testing.assert_close(cls(3, 4, alpha=0.9).alpha, torch.full((4,), 0.9))
    torch.testing.assert_close(cls(3, 4).tau.detach(), torch.full((4,), 20.0))
    torch.testing.assert_close(cls(3, 4, tau=10.0).tau.detach(), torch.full((4,), 10.0))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("param", ["dampening", "sharpness"])
@pytest.mark.parametrize("value, shape", [(torch.ones(5), "(5,)"), (torch.ones(2, 4), "(2, 4)")])
def test_per_neuron_sg_parameters_of_the_wrong_shape_fail_at_construction(cls, param, value, shape):
    """Used to pass construction and the forward pass, and fail only in backward."""
    sg = SurrogateGradient("fast-sigmoid", **{param: value})
    with pytest.raises(
        ValueError,
        match=rf"spike_fn.{param} must be a scalar or have shape \(4,\) for a layer of "
        rf"4 neurons, got shape {re.escape(shape)}",
    ):
        cls(3, 4, spike_fn=sg)


@pytest.mark.parametrize("cls", LAYERS)
def test_per_neuron_sg_parameters_of_the_right_shape_are_accepted(cls):
    for value in (torch.tensor(0.5), torch.tensor([0.5]), torch.full((4,), 0.5)):
        cls(3, 4, spike_fn=SurrogateGradient("fast-sigmoid", dampening=value, sharpness=value))


def test_sg_parameter_errors_give_the_accepted_range():
    with pytest.raises(ValueError, match=r"dampening must be finite and > 0 \(accepted range \(0, inf\)\), got nan"):
        SurrogateGradient(dampening=float("nan"))
    with pytest.raises(ValueError, match=r"sharpness must be finite and > 0 \(accepted range \(0, inf\)\), got min -1"):
        SurrogateGradient(sharpness=torch.tensor([1.0, -1.0]))


# ---------------------------------------------------------------- input dtypes


def _spikes(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < 0.3


@pytest.mark.parametrize("cls", [spikestab.LIF, spikestab.ALIF])
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bool_and_integer_spikes_are_converted_to_the_layer_dtype(cls, dtype, backend):
    torch.manual_seed(0)
    layer = cls(5, 4, backend=backend)
    x = _spikes((12, 3, 5))
    z_ref, st_ref = layer(x.float())
    z, st = layer(x.to(dtype))
    assert z.dtype == torch.float32 and st.v.dtype == torch.float32
    assert torch.equal(z, z_ref) and torch.equal(st.v, st_ref.v)


@pytest.mark.parametrize("cls", [spikestab.LIFCell, spikestab.ALIFCell])
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64])
def test_cells_convert_bool_and_integer_spikes(cls, dtype):
    torch.manual_seed(0)
    cell = cls(5, 4)
    x = _spikes((3, 5))
    z_ref, st_ref = cell(x.float())
    z, st = cell(x.to(dtype))
    assert z.dtype == torch.float32 and torch.equal(st.v, st_ref.v)


def test_integer_spike_counts_keep_their_values():
    torch.manual_seed(0)
    layer = spikestab.LIF(5, 4, recurrent=False)
    counts = torch.randint(0, 4, (6, 2, 5))
    _, v, _ = layer(counts, return_voltage=True)
    _, v_ref, _ = layer(counts.float(), return_voltage=True)
    assert torch.equal(v, v_ref)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_precisions_are_refused_with_what_to_call(cls, dtype):
    layer = cls(5, 4)
    shape = (6, 2, 5) if cls in (spikestab.LIF, spikestab.ALIF) else (2, 5)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(
        ValueError,
        match=rf"x has dtype torch.{name} but the layer computes in torch.float32: pass "
        rf"x.float\(\) \(or x.to\(torch.float32\)\), or convert the layer with "
        rf"layer.to\(torch.{name}\)",
    ):
        layer(torch.zeros(shape, dtype=dtype))


def test_a_float64_layer_takes_float64_input_and_converts_spikes_to_float64():
    torch.manual_seed(0)
    layer = spikestab.LIF(5, 4, backend="reference").double()
    x = _spikes((6, 2, 5))
    z, st = layer(x)
    assert z.dtype == torch.float64 and st.v.dtype == torch.float64
    z2, _ = layer(x.double())
    assert torch.equal(z, z2)
    with pytest.raises(ValueError, match="x has dtype torch.float32 but the layer computes in torch.float64"):
        layer(x.float())


def test_complex_input_is_refused():
    with pytest.raises(ValueError, match="x has dtype torch.complex64"):
        spikestab.LIF(5, 4)(torch.zeros(6, 2, 5, dtype=torch.complex64))


def test_models_accept_bool_spike_input():
    from spikestab.models import SNNClassifier, SNNConfig

    torch.manual_seed(0)
    model = SNNClassifier(SNNConfig(input_size=5, output_size=3, hidden_sizes=(4,), dropout=0.0))
    x = _spikes((8, 2, 5))
    assert torch.equal(model(x), model(x.float()))
    assert math.isfinite(model(x).sum().item())


@pytest.mark.parametrize("cls", [spikestab.LIF, spikestab.LIFCell, CubaLIF])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tau_adapt=50.0), r"tau_adapt is an ALIF option; \w+ has no adaptation \(use ALIF or ALIFCell\)"),
        (dict(beta_adapt=0.5), r"beta_adapt is an ALIF option"),
        (dict(tau_adapt=50.0, beta_adapt=0.5), r"tau_adapt and beta_adapt are ALIF options"),
    ],
)
def test_alif_only_arguments_are_refused_without_adaptation(cls, kwargs, match):
    """A LIF given tau_adapt / beta_adapt would silently ignore them (it has no adaptation trace)."""
    with pytest.raises(ValueError, match=match):
        cls(3, 4, **kwargs)
