"""The native backward's sparse adjoint product (issue 27 item 4): with a surrogate gradient of bounded
support the product gI_t W_hh is taken only at the neurons active at step t - 1; every gradient must
equal the reference autograd loop's, at any sharpness, and unbounded shapes must keep the full product."""

import pytest
import torch

from spikestab.dynamics import RESETS, NeuronState
from spikestab.kernels import native
from spikestab.neurons.layers import ALIF, LIF
from spikestab.surrogate import BOUNDED_SUPPORT, SurrogateGradient
from test_kernels import _run, _wide_case

HIDDEN, INPUTS = 43, 30


def _case(cls, reset, detach, shape, sharpness, batch=7, steps=16, seed=5):
    """test_kernels' wide case as a recurrent layer 30 -> 43 (two 16-column panels and a tail; 43 = 5 * 8 + 3
    for the dot products) with learnable leak and threshold, binary input at 15 %, a random initial state and
    random loss weights on every output, and an SG of ``shape`` at ``sharpness``."""
    sg = SurrogateGradient(shape, dampening=0.8, sharpness=sharpness)
    return _wide_case(cls, reset, detach, batch, steps, HIDDEN, INPUTS, seed=seed, sg=sg, density=0.15)


def _grads(layer, backend, x, state, weights):
    """Gradients of test_kernels' loss on spikes, voltages and the final state w.r.t. input, state and
    parameters."""
    return _run(layer, backend, x, state, weights)[2]


@pytest.fixture
def counts(monkeypatch):
    """The (non-zero SG entries, sparse (row, step) products) of every native backward call."""
    seen: list[tuple[int, int]] = []
    inner = native.sequence_backward

    def spy(*args):
        out, c = inner(*args)
        seen.append(c)
        return out, c

    monkeypatch.setattr(native, "sequence_backward", spy)
    return seen


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _check(layer, x, state, weights, tol=2e-5):
    ref = _grads(layer, "reference", x, state, weights)
    got = _grads(layer, "native", x, state, weights)
    assert got.keys() == ref.keys()
    for name, g in ref.items():
        if g is None:
            assert got[name] is None or not got[name].any(), name
        else:
            assert _rel(got[name], g) < tol, (name, _rel(got[name], g))


@pytest.mark.parametrize("shape", sorted(BOUNDED_SUPPORT))
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("detach", [True, False])
def test_sparse_adjoint_equals_reference(counts, shape, reset, cls, detach):
    """A sharpness where a few % to a fifth of the neurons are active: most products run sparse."""
    layer, x, state, weights = _case(cls, reset, detach, shape, sharpness=6.0)
    _check(layer, x, state, weights)
    nonzero, sparse_rows = counts[-1]
    cells, row_steps = x.shape[0] * x.shape[1] * HIDDEN, (x.shape[0] - 1) * x.shape[1]
    assert 0.0 < nonzero / cells < 0.25, nonzero / cells
    assert sparse_rows > row_steps // 2, (sparse_rows, row_steps)


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("sharpness,active", [(1e4, (0.0, 0.002)), (0.01, (0.999, 1.0))])
@pytest.mark.parametrize("always", [False, True])
def test_almost_nothing_or_everything_active(counts, monkeypatch, cls, sharpness, active, always):
    """Nearly no active neuron (empty lists at most steps) or all of them; ``always`` forces the
    selected products at every step (threshold above any fraction), so they are checked at full
    activity too, where the dispatch itself takes the full product."""
    if always:
        monkeypatch.setattr(native, "SPARSE_ADJOINT_BELOW", 1e9)
    layer, x, state, weights = _case(cls, "subtract", False, "triangular", sharpness)
    _check(layer, x, state, weights)
    nonzero, sparse_rows = counts[-1]
    fraction = nonzero / (x.shape[0] * x.shape[1] * HIDDEN)
    assert active[0] <= fraction <= active[1], fraction
    row_steps = (x.shape[0] - 1) * x.shape[1]
    if always:
        assert sparse_rows == row_steps
    elif fraction > 0.99:
        assert sparse_rows == 0


@pytest.mark.parametrize("batch,threads", [(1, 1), (13, 2), (32, 3)])
def test_sparse_adjoint_at_any_batch_and_thread_count(counts, batch, threads):
    """Tiles of 1 to 6 rows split over threads, B = 1 included."""
    layer, x, state, weights = _case(ALIF, "multiplicative_all", False, "rectangular", 4.0, batch=batch, steps=9)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check(layer, x, state, weights)
    finally:
        torch.set_num_threads(before)
    assert counts[-1][1] > 0


@pytest.mark.parametrize("shape", ["fast-sigmoid", "gaussian"])
def test_unbounded_shapes_take_the_full_product(counts, shape):
    """The fast sigmoid is never zero (and the gaussian, evaluated in torch, rarely): full products."""
    layer, x, state, weights = _case(LIF, "subtract", True, shape, sharpness=6.0)
    _check(layer, x, state, weights)
    assert counts[-1][1] == 0


def test_non_finite_gradients_spread_as_in_the_full_product(counts, monkeypatch):
    """A NaN in the incoming gradient (one batch row, one step) reaches the same entries with the
    selected products as with the full one and the reference loop: a tile with a non-finite gI takes
    the full product, where 0 * NaN is NaN."""
    layer, x, state, weights = _case(LIF, "subtract", True, "triangular", sharpness=6.0)
    weights[0][10, 2, 5] = float("nan")
    ref = _grads(layer, "reference", x, state, weights)
    monkeypatch.setattr(native, "SPARSE_ADJOINT_BELOW", 1e9)
    got = _grads(layer, "native", x, state, weights)
    assert counts[-1][1] > 0
    assert 0 < ref["x"].isnan().sum() < ref["x"].numel()  # the other rows stay finite
    for name, g in ref.items():
        if g is not None:
            assert torch.equal(got[name].isnan(), g.isnan()), name


def test_a_non_finite_recurrent_weight_takes_the_full_product(counts, monkeypatch):
    """W_hh[3, 7] infinite and neuron 7 never near its threshold (its spikes and SG stay 0, so the
    forward skips the entry): the full adjoint product makes gz[7] non-finite and 0 * inf spreads NaN
    from there; the selected products would skip neuron 7, so the call keeps the full product (the same
    NaNs as with the selected products switched off)."""
    layer, x, state, weights = _case(LIF, "subtract", True, "triangular", sharpness=6.0)
    with torch.no_grad():
        layer.weight_hh[3, 7] = float("inf")
        layer.threshold[7] = 1e6
    state = NeuronState(state.v, state.z.index_fill(1, torch.tensor([7]), 0.0), None)
    got = _grads(layer, "native", x, state, weights)
    assert counts[-1][1] == 0 and got["x"].isnan().any()
    monkeypatch.setattr(native, "SPARSE_ADJOINT_BELOW", 0.0)
    full = _grads(layer, "native", x, state, weights)
    for name, g in full.items():
        if g is not None:
            assert torch.equal(got[name].isnan(), g.isnan()), name
