"""SG converters to and from snnTorch 1.0, Norse 1.1 and SpikingJelly 2.0, checked against the peers' own
backward: each native surrogate is built by the peer library and differentiated by autograd on a grid."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from spikestab import surrogate
from spikestab.surrogate import SurrogateGradient

snn_surrogate = pytest.importorskip("snntorch.surrogate")
norse_threshold = pytest.importorskip("norse.torch.functional.threshold")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

# the grid avoids 0, where SpikingJelly's forward (x >= 0) and everyone else's (x > 0) differ
X = torch.linspace(-4.0, 4.0, 1600, dtype=torch.float64)
SQRT_PI = math.sqrt(math.pi)


def _peer_grad(spike_fn, x: torch.Tensor = X) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, d spikes / d x) of a peer's spike function, by autograd through the peer's own backward."""
    x = x.clone().requires_grad_(True)
    out = spike_fn(x)
    out.sum().backward()
    return out.detach(), x.grad


def _norse_fn(method: str, alpha: float):
    return lambda x: norse_threshold.threshold(x, method, alpha)


def _assert_same_sg(a: SurrogateGradient, b: SurrogateGradient) -> None:
    assert a.shape == b.shape and a.tail == b.tail
    assert torch.equal(a.dampening, b.dampening) and torch.equal(a.sharpness, b.sharpness)


def _assert_matches_peer(sg: SurrogateGradient, spike_fn) -> None:
    spikes, grad = _peer_grad(spike_fn)
    torch.testing.assert_close(grad, sg.derivative(X).to(grad.dtype), rtol=2e-6, atol=1e-9)
    assert torch.equal(spikes.to(torch.float64), surrogate.heaviside(X)), "the forward is the same step"
    assert grad.max() > 1e-3, "the grid must cover the surrogate's support"


# spikestab SGs each library expresses: (shape, dampening, sharpness, tail)
SNNTORCH_OK = [
    ("fast-sigmoid", 1.0, 12.5, None),
    ("fast-sigmoid", 1.0, 0.3, None),
    ("sigmoid", 1.25, 1.25, None),
    ("sigmoid", 6.25, 6.25, None),
    ("arctan", 1.0, 1.0, None),
    ("arctan", 0.35, 0.35, None),
]
NORSE_OK = [
    ("fast-sigmoid", 1.0, 0.5, None),
    ("triangular", 0.3, 1.0, None),
    ("triangular", 2.5, 1.0, None),
    ("sigmoid", 1.0, 0.7, None),
    ("sigmoid", 1.0, 3.0, None),
    ("gaussian", 2.0 / SQRT_PI, 0.4, None),
    ("gaussian", 2.0 / SQRT_PI, 2.5, None),
]
SPIKINGJELLY_OK = [
    ("sigmoid", 1.0, 1.0, None),
    ("arctan", 0.7, 0.7, None),
    ("fast-sigmoid", 0.8, 0.8, None),
    ("fast-sigmoid", 0.37, 0.5, None),
    ("fast-sigmoid", 3.0, 0.5, None),
    ("exponential", 1.5, 1.5, None),
    ("gaussian", 0.6, 0.6, None),
    ("triangular", 2.0, 2.0, None),
    ("triangular", 0.45, 0.45, None),
    ("rectangular", 0.75, 0.75, None),
    ("q-pseudospike", 1.0, 1.0, 1.56),
    ("q-pseudospike", 1.0, 1.0, 3.0),
]


def _sg(shape, d, s, tail) -> SurrogateGradient:
    return surrogate.get(shape, d, s, tail)


@pytest.mark.parametrize("case", SNNTORCH_OK)
def test_to_snntorch_has_the_same_backward_and_round_trips(case):
    sg = _sg(*case)
    native = surrogate.to_snntorch(sg)
    assert native.__module__ == "snntorch.surrogate"
    _assert_matches_peer(sg, native)
    _assert_same_sg(surrogate.from_snntorch(native), sg)
    name, kwargs = surrogate.snntorch_params(sg)
    _assert_same_sg(surrogate.from_snntorch(name, **kwargs), sg)


@pytest.mark.parametrize("case", NORSE_OK)
def test_to_norse_has_the_same_backward_and_round_trips(case):
    sg = _sg(*case)
    method, alpha = surrogate.to_norse(sg)
    _assert_matches_peer(sg, _norse_fn(method, alpha))
    _assert_same_sg(surrogate.from_norse(method, alpha), sg)


@pytest.mark.parametrize("case", SPIKINGJELLY_OK)
def test_to_spikingjelly_has_the_same_backward_and_round_trips(case):
    sg = _sg(*case)
    native = surrogate.to_spikingjelly(sg)
    assert isinstance(native, sj_surrogate.SurrogateFunctionBase) and native.spiking
    _assert_matches_peer(sg, native)
    _assert_same_sg(surrogate.from_spikingjelly(native), sg)
    name, kwargs = surrogate.spikingjelly_params(sg)
    _assert_same_sg(surrogate.from_spikingjelly(name, **kwargs), sg)


# native surrogates, built by the peers: from_X must reproduce their backward, and to_X(from_X(...)) rebuild them
SNNTORCH_NATIVE = [
    ("fast_sigmoid", {"slope": 25}),
    ("fast_sigmoid", {"slope": 3.5}),
    ("sigmoid", {"slope": 25}),
    ("sigmoid", {"slope": 0.6}),
    ("atan", {"alpha": 2.0}),
    ("atan", {"alpha": 7.0}),
]
NORSE_NATIVE = [
    ("super", 100.0),
    ("triangle", 0.3),
    ("triangle", 1.7),
    ("tanh", 1.0),
    ("tanh", 4.0),
    ("heavi_erfc", 1.0),
    ("heavi_erfc", 3.0),
]
SPIKINGJELLY_NATIVE = [
    ("Sigmoid", 4.0),
    ("Sigmoid", 0.9),
    ("ATan", 2.0),
    ("SoftSign", 2.0),
    ("SoftSign", 5.0),
    ("SuperSpike", 1.0),
    ("SuperSpike", 0.2),
    ("PiecewiseExp", 1.0),
    ("PiecewiseExp", 3.0),
    ("Erf", 2.0),
    ("Erf", 0.7),
    ("PiecewiseQuadratic", 1.0),
    ("PiecewiseQuadratic", 2.5),
    ("Rect", 1.0),
    ("Rect", 0.3),
    ("QPseudoSpike", 2.0),
    ("QPseudoSpike", 1.3),
]


@pytest.mark.parametrize("name,kwargs", SNNTORCH_NATIVE)
def test_from_snntorch_reproduces_its_backward_and_to_snntorch_rebuilds_it(name, kwargs):
    native = getattr(snn_surrogate, name)(**kwargs)
    sg = surrogate.from_snntorch(native)
    _assert_matches_peer(sg, native)
    _assert_same_sg(surrogate.from_snntorch(name, **kwargs), sg)
    back = surrogate.to_snntorch(sg)
    assert back.__qualname__ == native.__qualname__
    assert inspect.getclosurevars(back).nonlocals == pytest.approx(kwargs, rel=1e-7)


@pytest.mark.parametrize("method,alpha", NORSE_NATIVE)
def test_from_norse_reproduces_its_backward_and_to_norse_rebuilds_it(method, alpha):
    sg = surrogate.from_norse(method, alpha)
    _assert_matches_peer(sg, _norse_fn(method, alpha))
    back_method, back_alpha = surrogate.to_norse(sg)
    assert back_method == method and back_alpha == pytest.approx(alpha, rel=1e-7)


@pytest.mark.parametrize("name,alpha", SPIKINGJELLY_NATIVE)
def test_from_spikingjelly_reproduces_its_backward_and_to_spikingjelly_rebuilds_it(name, alpha):
    native = getattr(sj_surrogate, name)(alpha=alpha)
    sg = surrogate.from_spikingjelly(native)
    _assert_matches_peer(sg, native)
    _assert_same_sg(surrogate.from_spikingjelly(name, alpha), sg)
    back = surrogate.to_spikingjelly(sg)
    assert type(back) is type(native) and back.alpha == pytest.approx(alpha, rel=1e-7)


def test_norse_superspike_ignores_alpha_so_every_alpha_maps_to_one_sg():
    """Norse 1.1's SuperSpike backward is 1/(|x|+1)^2 whatever alpha; to_norse returns Norse's default 100."""
    for alpha in (1.0, 100.0, 1000.0):
        sg = surrogate.from_norse("super", alpha)
        _assert_matches_peer(sg, _norse_fn("super", alpha))
    assert surrogate.to_norse(surrogate.from_norse("super", 7.0)) == ("super", 100.0)


def test_spikingjelly_softsign_is_chosen_where_superspike_fits_too():
    """fast-sigmoid with dampening = sharpness = 1/2 is both SoftSign(1) and SuperSpike(1/2): same backward."""
    sg = surrogate.get("fast-sigmoid", 0.5, 0.5)
    native = surrogate.to_spikingjelly(sg)
    assert type(native).__name__ == "SoftSign" and native.alpha == 1.0
    torch.testing.assert_close(_peer_grad(native)[1], _peer_grad(sj_surrogate.SuperSpike(alpha=0.5))[1])


def test_snntorch_default_neuron_surrogate_is_read():
    """An snnTorch Leaky's default spike_grad (atan, alpha 2) is arctan with dampening = sharpness = 1."""
    import snntorch

    leaky = snntorch.Leaky(beta=0.9)
    sg = surrogate.from_snntorch(leaky.spike_grad)
    _assert_same_sg(sg, surrogate.get("arctan", 1.0, 1.0))
    _assert_matches_peer(sg, leaky.spike_grad)


def test_converters_accept_float32_rounding_of_tied_parameters():
    """Dampening and sharpness computed separately may differ by float32 rounding: still the same native."""
    sg = surrogate.get("arctan", 0.7, 0.7 * (1 + 3e-7))
    assert surrogate.snntorch_params(sg)[0] == "atan"
    assert surrogate.spikingjelly_params(sg)[0] == "ATan"


@pytest.mark.parametrize(
    "convert,sg,match",
    [
        (
            surrogate.to_snntorch,
            surrogate.get("fast-sigmoid", 0.37, 2.0),
            r"snnTorch's fast_sigmoid has a fixed peak of 1: fast-sigmoid with dampening 0.37.*dampening 1, any sharp",
        ),
        (surrogate.to_snntorch, surrogate.get("sigmoid", 0.5, 2.0), r"snnTorch's sigmoid has unit area.*dampening =="),
        (surrogate.to_snntorch, surrogate.get("arctan", 1.0, 2.0), r"snnTorch's atan has unit area"),
        (surrogate.to_snntorch, surrogate.get("triangular"), r"snnTorch 1.0 has no triangular surrogate"),
        (surrogate.to_snntorch, surrogate.get("q-pseudospike"), r"snnTorch 1.0 has no q-pseudospike"),
        (
            surrogate.to_norse,
            surrogate.get("fast-sigmoid", 1.0, 12.5),
            r"Norse's super \(SuperSpike\) computes 1/\(\|x\|\+1\)\^2 whatever alpha.*sharpness 12.5",
        ),
        (surrogate.to_norse, surrogate.get("triangular", 0.3, 2.0), r"Norse's triangle has a fixed width of 1"),
        (surrogate.to_norse, surrogate.get("sigmoid", 0.3, 2.0), r"Norse's tanh has a fixed peak of 1"),
        (surrogate.to_norse, surrogate.get("gaussian", 1.0, 2.0), r"Norse's heavi_erfc has a fixed peak of 2/sqrt"),
        (surrogate.to_norse, surrogate.get("arctan"), r"Norse 1.1 has no arctan surrogate"),
        (surrogate.to_spikingjelly, surrogate.get("sigmoid", 0.3, 2.0), r"SpikingJelly's Sigmoid has unit area"),
        (
            surrogate.to_spikingjelly,
            surrogate.get("fast-sigmoid", 0.3, 2.0),
            r"SpikingJelly's SoftSign and SuperSpike.*dampening == sharpness, or sharpness 0.5",
        ),
        (
            surrogate.to_spikingjelly,
            surrogate.get("q-pseudospike", 0.5, 1.0, 2.0),
            r"SpikingJelly's QPseudoSpike.*dampening 1, sharpness 1, any tail",
        ),
        (
            surrogate.to_snntorch,
            surrogate.get("fast-sigmoid", 1.0, torch.tensor([1.0, 2.0])),
            r"sg.sharpness is per-neuron \(2 different values\), but snnTorch takes one surrogate per layer",
        ),
    ],
)
def test_what_a_library_cannot_express_is_named(convert, sg, match):
    with pytest.raises(ValueError, match=match):
        convert(sg)


def test_uniform_per_neuron_parameters_convert():
    sg = surrogate.get("fast-sigmoid", torch.ones(4), torch.full((4,), 3.0))
    assert surrogate.snntorch_params(sg) == ("fast_sigmoid", {"slope": 6.0})


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: surrogate.from_snntorch("triangular"), r"snnTorch 1.0's triangular.*\+threshold below"),
        (lambda: surrogate.from_snntorch(snn_surrogate.triangular()), r"snnTorch 1.0's triangular"),
        (lambda: surrogate.from_snntorch(snn_surrogate.SFS()), r"name must be one of"),
        (lambda: surrogate.from_snntorch(lambda x: x), r"name must be a surrogate name or an object built by snn"),
        (lambda: surrogate.from_norse("circ", 1.0), r"circ derivative .* no spikestab shape"),
        (lambda: surrogate.from_norse("heaviside", 1.0), r"method must be one of"),
        (lambda: surrogate.from_norse("tanh", 1.0, alpha_in_backward=True), r"alpha_in_backward applies to"),
        (lambda: surrogate.from_spikingjelly(sj_surrogate.S2NN()), r"name must be one of"),
        (lambda: surrogate.from_spikingjelly(sj_surrogate.Sigmoid(spiking=False)), r"spiking mode"),
        (lambda: surrogate.from_spikingjelly("Sigmoid"), r"alpha is required"),
        (lambda: surrogate.from_spikingjelly("Rect", -1.0), r"alpha must be finite and > 0"),
    ],
)
def test_bad_peer_surrogates_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
