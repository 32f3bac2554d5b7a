"""Surrogate-gradient family against hand-written formulas and numerical integrals."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from spikestab import surrogate
from spikestab.surrogate import SurrogateGradient

SIG = special.expit

# Independent references: f(u) for each shape, written from docs/theory.md, "Surrogate gradients" (q = tail).
REFERENCE_F = {
    "rectangular": lambda u, q: (np.abs(2 * u) < 1).astype(float),
    "triangular": lambda u, q: np.maximum(1 - np.abs(u), 0),
    "exponential": lambda u, q: np.exp(-2 * np.abs(u)),
    "gaussian": lambda u, q: np.exp(-np.pi * u**2),
    "sigmoid": lambda u, q: 4 * SIG(4 * u) * (1 - SIG(4 * u)),
    "fast-sigmoid": lambda u, q: 1 / (1 + 2 * np.abs(u)) ** 2,
    "q-pseudospike": lambda u, q: (1 + 2 * np.abs(u) / (q - 1)) ** (-q),
    "arctan": lambda u, q: 1 / (1 + (np.pi * u) ** 2),
}
TAILS = {"q-pseudospike": [1.1, 1.56, 3.0, 16.85]}
CASES = [(name, q) for name in REFERENCE_F for q in TAILS.get(name, [None])]


def _sg_grad(sg: SurrogateGradient, v: torch.Tensor) -> torch.Tensor:
    v = v.clone().requires_grad_(True)
    sg(v).sum().backward()
    return v.grad


@pytest.mark.parametrize("name,q", CASES)
@pytest.mark.parametrize("damp,sharp", [(1.0, 1.0), (0.375, 2.5), (1.75, 0.4375)])
def test_backward_equals_formula(name, q, damp, sharp):
    sg = surrogate.get(name, dampening=damp, sharpness=sharp, tail=q)
    v = torch.linspace(-4, 4, 1601, dtype=torch.float64)
    got = _sg_grad(sg, v).numpy()
    want = damp * REFERENCE_F[name](sharp * v.numpy(), q)
    # the rectangle's edges are a measure-zero set where float rounding may pick either side
    keep = ~np.isclose(np.abs(2 * sharp * v.numpy()), 1.0) if name == "rectangular" else slice(None)
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name,q", CASES)
def test_forward_is_heaviside(name, q):
    sg = surrogate.get(name, tail=q)
    v = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0])
    assert torch.equal(sg(v), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("name,q", CASES)
def test_peak_one_and_unit_area(name, q):
    f = lambda u: float(REFERENCE_F[name](np.array(u), q))  # noqa: E731
    sg = surrogate.get(name, tail=q)
    assert sg.shape_fn(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(1.0, abs=1e-12)
    # numerical integration of the library's f (not the reference) over the whole line
    lib_f = lambda u: sg.shape_fn(torch.tensor(u, dtype=torch.float64)).item()  # noqa: E731
    pts = [-0.5, 0.0, 0.5] if name == "rectangular" else [0.0]
    area = sum(integrate.quad(lib_f, a, b, points=None, limit=500, epsabs=1e-12)[0] for a, b in _segments(pts))
    assert area == pytest.approx(1.0, abs=1e-4)
    assert f(0.0) == pytest.approx(1.0)


def _segments(points):
    edges = [-np.inf, *points, np.inf]
    return list(zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("name,q", CASES)
def test_closed_form_integrals(name, q):
    sg = surrogate.get(name, tail=q)
    f = REFERENCE_F[name]
    for u in [-2.3, -0.7, -0.2, 0.1, 0.45, 1.3, 5.0]:
        F = integrate.quad(lambda s: f(np.array(s), q), 0, u, limit=200, points=[0.5] if 0 < 0.5 < u else None)[0]
        F2 = integrate.quad(lambda s: f(np.array(s), q) ** 2, 0, u, limit=200)[0]
        t = torch.tensor(u, dtype=torch.float64)
        assert sg.antiderivative(t).item() == pytest.approx(F, abs=1e-7)
        assert sg.antiderivative_sq(t).item() == pytest.approx(F2, abs=1e-7)
    ms = sum(integrate.quad(lambda s: f(np.array(s), q) ** 2, a, b, limit=500)[0] for a, b in _segments([-0.5, 0, 0.5]))
    assert sg.mean_square_integral() == pytest.approx(ms, abs=1e-6)


def test_mean_square_table_of_the_theory_page():
    table = {
        "rectangular": 1.0,
        "gaussian": 0.707,
        "triangular": 0.667,
        "sigmoid": 0.667,
        "exponential": 0.5,
        "fast-sigmoid": 0.333,
    }
    for name, ms in table.items():
        assert surrogate.get(name).mean_square_integral() == pytest.approx(ms, abs=1e-3)


@pytest.mark.parametrize("name,q", CASES)
def test_uniform_moments_match_monte_carlo(name, q):
    sg = surrogate.get(name, dampening=0.7, sharpness=1.3, tail=q)
    lo = torch.tensor([-3.0, -0.2, 0.5])
    hi = torch.tensor([2.0, 0.9, 4.0])
    u = torch.linspace(0, 1, 200001, dtype=torch.float64)[:, None]
    v = lo.double() + u * (hi - lo).double()
    d = 0.7 * torch.as_tensor(REFERENCE_F[name]((1.3 * v).numpy(), q))
    np.testing.assert_allclose(sg.mean(lo, hi).numpy(), d.mean(0).numpy(), rtol=2e-3)
    np.testing.assert_allclose(sg.mean_square(lo, hi).numpy(), (d**2).mean(0).numpy(), rtol=2e-3)


@pytest.mark.parametrize("name,q", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_numerically_safe(name, q, dtype):
    sg = surrogate.get(name, dampening=2.0, sharpness=50.0, tail=q)
    big = 1e30 if dtype == torch.float32 else 6e4 if dtype == torch.float16 else 1e30
    v = torch.tensor([-big, -1e4, -1.0, 0.0, 1e-3, 1.0, 1e4, big], dtype=dtype)
    g = _sg_grad(sg, v)
    assert g.dtype == dtype and torch.isfinite(g).all()
    assert (g >= 0).all()


def test_per_neuron_parameters_broadcast():
    damp = torch.tensor([0.1, 0.5, 1.0])
    sharp = torch.tensor([1.0, 2.0, 3.0])
    sg = surrogate.get("exponential", damp, sharp)
    v = torch.randn(4, 3, dtype=torch.float64)
    want = damp.double() * torch.exp(-2 * (sharp.double() * v).abs())
    torch.testing.assert_close(_sg_grad(sg, v), want)


def test_learnable_parameters_follow_the_primitive():
    """With learnable SG parameters, their gradient is that of P(v) = int_0^v d f(s x) dx (numerical)."""
    d0, s0 = 0.8, 1.7
    sg = SurrogateGradient("gaussian", dampening=d0, sharpness=s0, learnable=True).double()
    v = torch.tensor([-0.9, 0.3, 1.4], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (sg(v) * w).sum().backward()

    def primitive(d, s):
        return sum(
            wi * integrate.quad(lambda x: d * math.exp(-math.pi * (s * x) ** 2), 0, vi)[0]
            for vi, wi in zip(v.tolist(), w.tolist())
        )

    h = 1e-5
    dd = (primitive(d0 + h, s0) - primitive(d0 - h, s0)) / (2 * h)
    ds = (primitive(d0, s0 + h) - primitive(d0, s0 - h)) / (2 * h)
    assert sg.dampening.grad.item() == pytest.approx(dd, rel=1e-5)
    assert sg.sharpness.grad.item() == pytest.approx(ds, rel=1e-5)


# --- converters: each reproduces the peer library's gradient formula (written here from its docs) ---
X = torch.linspace(-3, 3, 601, dtype=torch.float64)
PEER_CASES = [
    (surrogate.from_snntorch("fast_sigmoid", slope=25), lambda x: 1 / (25 * x.abs() + 1) ** 2),
    (surrogate.from_snntorch("sigmoid", slope=5), lambda x: 5 * torch.sigmoid(5 * x) * (1 - torch.sigmoid(5 * x))),
    (surrogate.from_snntorch("atan", alpha=2.0), lambda x: 1.0 / (1 + (math.pi / 2 * 2.0 * x) ** 2)),
    (
        surrogate.from_spikingjelly("Sigmoid", alpha=4.0),
        lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
    ),
    (surrogate.from_spikingjelly("ATan", alpha=3.0), lambda x: 1.5 / (1 + (math.pi / 2 * 3.0 * x) ** 2)),
    (surrogate.from_spikingjelly("QPseudoSpike", alpha=2.0), lambda x: (1 + 2 * x.abs() / (2.0 - 1)) ** (-2.0)),
    (surrogate.from_norse("super", alpha=100.0), lambda x: 1 / (x.abs() + 1) ** 2),  # norse 1.1.0 ignores alpha
    (surrogate.from_norse("super", alpha=100.0, alpha_in_backward=True), lambda x: 1 / (100 * x.abs() + 1) ** 2),
    (
        surrogate.from_sinabs(grad_width=0.5, grad_scale=1.0, threshold=1.0),
        lambda x: 1 / 0.5 * torch.exp(-x.abs() / 0.5),
    ),
    (
        surrogate.from_sinabs(grad_width=0.3, grad_scale=2.0, threshold=2.0),
        lambda x: 2.0 / 0.6 * torch.exp(-x.abs() / 0.6),
    ),
    (surrogate.from_lava_dl(tau_grad=1.0, scale_grad=1.0), lambda x: 1 / 2 * torch.exp(-x.abs())),
    (
        surrogate.from_lava_dl(tau_grad=0.5, scale_grad=3.0, threshold=1.5),
        lambda x: 3.0 / (2 * 0.75) * torch.exp(-x.abs() / 0.75),
    ),
]


@pytest.mark.parametrize("sg,peer", PEER_CASES)
def test_converters_reproduce_peer_formula(sg, peer):
    np.testing.assert_allclose(_sg_grad(sg, X).numpy(), peer(X).numpy(), rtol=1e-6, atol=1e-12)  # float32 parameters


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="q-pseudospike", tail=1.0), "tail"),
        (dict(name="q-pseudospike", tail=0.5), "tail"),
        (dict(name="fast-sigmoid", sharpness=-1.0), "sharpness"),
        (dict(name="fast-sigmoid", sharpness=0.0), "sharpness"),
        (dict(name="fast-sigmoid", dampening=-0.1), "dampening"),
        (dict(name="fast-sigmoid", dampening=float("nan")), "dampening"),
        (dict(name="fast-sigmoid", sharpness=float("inf")), "sharpness"),
        (dict(name="fast-sigmoid", dampening=torch.tensor([1.0, -1.0])), "dampening"),
        (dict(name="fast-sigmoid", tail=2.0), "tail"),
        (dict(name="bogus"), "shape"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        surrogate.get(**kwargs)


def test_bad_converter_arguments_raise():
    with pytest.raises(ValueError, match="slope"):
        surrogate.from_snntorch("fast_sigmoid", slope=0.0)
    with pytest.raises(ValueError, match="name"):
        surrogate.from_spikingjelly("NonzeroSignLogAbs", alpha=2.0)
    with pytest.raises(ValueError, match="grad_width"):
        surrogate.from_sinabs(grad_width=-1)


@pytest.mark.parametrize("shape", sorted(surrogate.SHAPES))
def test_an_sg_pickles_and_keeps_its_derivative(shape):
    """torch.save of a whole model pickles its SGs (the shape's functions are looked up, not stored: a
    stored lambda made every SG unpicklable)."""
    import pickle

    sg = surrogate.SurrogateGradient(shape, 0.3, 2.0, tail=1.8 if shape == "q-pseudospike" else None)
    back = pickle.loads(pickle.dumps(sg))
    v = torch.linspace(-3, 3, 61)
    assert torch.equal(back.derivative(v), sg.derivative(v))
    assert back.mean_square_integral() == sg.mean_square_integral()
