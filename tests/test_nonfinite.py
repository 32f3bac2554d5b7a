"""A NaN or inf entering a spiking layer shows in its output on every backend (issue 15 item 2): the
spikes are NaN wherever the centred voltage v - A is not finite (``spikestab.surrogate.heaviside``), and
a non-finite gradient coming in reaches the same gradients on every backend (the sparse weight-gradient
products included). Before, the spikes stayed plausible zeros and ones while the voltages were NaN."""

import math

import pytest
import torch

from spikestab.dynamics import NeuronState
from spikestab.neurons.layers import ALIF, LIF, ALIFCell, LIFCell
from spikestab.neurons.slstm import SLSTM
from spikestab.surrogate import SurrogateGradient, heaviside

BACKENDS = ["reference", "fused", "native", "auto"]
STEPS, BATCH, INPUTS, HIDDEN = 24, 4, 12, 10
NAN, INF = float("nan"), float("inf")


def _layer(cls, recurrent, backend, **kwargs):
    torch.manual_seed(3)
    layer = cls(
        INPUTS, HIDDEN, recurrent=recurrent, backend=backend, bias=True, learn_tau=True, learn_threshold=True, **kwargs
    )
    with torch.no_grad():
        layer.weight_ih.mul_(3.0)  # spiking at a few tens of %
        layer.bias.uniform_(0.0, 0.2)
    return layer


def _input(seed):
    """Binary spikes at 10 % (the event-driven projection runs for "auto" too) and a seeded position
    (t0, b0, i0) inside the sequence."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(STEPS, BATCH, INPUTS, generator=g) < 0.1).float()
    t0 = int(torch.randint(1, STEPS - 2, (), generator=g))
    b0, i0 = int(torch.randint(BATCH, (), generator=g)), int(torch.randint(INPUTS, (), generator=g))
    return x, (t0, b0, i0)


def test_heaviside_gives_nan_for_a_non_finite_voltage_only():
    v = torch.tensor([2.0, -1.0, 0.0, -0.0, 1e-45, -1e-45, NAN, INF, -INF])
    expected = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, NAN, NAN, NAN])
    assert torch.equal(heaviside(v).isnan(), expected.isnan())
    assert torch.equal(heaviside(v)[:6], expected[:6])
    out = torch.empty(9)
    assert heaviside(v, out=out) is out and torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(SurrogateGradient()(v).isnan(), expected.isnan())


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_input_gives_nan_spikes_from_its_step_on(value, cls, recurrent, backend):
    """x[t0, b0, i0] = NaN or +-inf: the current of every neuron of row b0 at t0 is non-finite, so its
    spikes are NaN from t0 on (the voltage stays NaN through the reset), and every other spike equals
    the clean run's: nothing before t0 or in another batch row changes."""
    x, (t0, b0, i0) = _input(seed=11 + recurrent)
    layer = _layer(cls, recurrent, backend)
    z_clean, _ = layer(x)
    assert 0.05 < z_clean.mean() < 0.8
    x[t0, b0, i0] = value
    z, _ = layer(x)
    expected = torch.zeros_like(z, dtype=torch.bool)
    expected[t0:, b0] = True
    assert torch.equal(z.isnan(), expected)
    assert torch.equal(z[~expected], z_clean[~expected])


@pytest.mark.parametrize("backend", ["fused", "native"])
def test_non_finite_input_in_checkpointed_segments(backend):
    x, (t0, b0, i0) = _input(seed=5)
    layer = _layer(ALIF, True, backend, checkpoint=5)
    x[t0, b0, i0] = NAN
    z, _ = layer(x)
    assert torch.equal(z.isnan().any(-1), torch.arange(STEPS)[:, None].ge(t0) & torch.arange(BATCH).eq(b0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_state_gives_nan_spikes(backend):
    """A NaN entering through the initial state (v0 of one neuron, a0 of another) shows as well."""
    layer = _layer(ALIF, False, backend)
    x, _ = _input(seed=2)
    v0, a0 = torch.zeros(BATCH, HIDDEN), torch.zeros(BATCH, HIDDEN)
    v0[1, 3], a0[2, 5] = NAN, NAN
    z, _ = layer(x, NeuronState(v0, torch.zeros(BATCH, HIDDEN), a0))
    assert z[:, 1, 3].isnan().all() and z[:, 2, 5].isnan().all()
    assert z.isnan().sum() == 2 * STEPS  # feed-forward: those two neurons only


@pytest.mark.parametrize("cls", [LIFCell, ALIFCell])
def test_non_finite_input_to_a_cell(cls):
    torch.manual_seed(0)
    cell = cls(INPUTS, HIDDEN)
    x = torch.rand(BATCH, INPUTS)
    x[2, 7] = INF
    z, _ = cell(x)
    assert torch.equal(z.isnan().any(-1), torch.tensor([False, False, True, False]))


@pytest.mark.parametrize("learnable", [False, True])  # the hand-written and the autograd sLSTM loops
def test_non_finite_input_to_an_slstm(learnable):
    torch.manual_seed(0)
    layer = SLSTM(INPUTS, HIDDEN, spike_fn=SurrogateGradient(learnable=learnable))
    x, (t0, b0, i0) = _input(seed=4)
    x[t0, b0, i0] = NAN
    h, _ = layer(x)
    assert h[t0:, b0].isnan().all() and not h[:t0].isnan().any() and not h[:, b0 + 1 :].isnan().any()


def _grads(layer, x, grad_spikes):
    x = x.clone().requires_grad_(True)
    z, _ = layer(x)
    z.backward(grad_spikes)
    named = {"x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    return {n: g for n, g in named.items() if g is not None}


@pytest.mark.parametrize("value", [NAN, INF])
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("backend", ["fused", "native", "auto"])
def test_non_finite_gradient_reaches_the_same_gradients_as_the_reference(value, cls, recurrent, backend):
    """dL/dz[t0, b0, h0] = NaN or inf (with a finite input): the non-finite entries of the gradients of
    x, W_ih, W_hh, b, tau and the threshold are those of the reference loop, where 0 * NaN is NaN in
    the dense products. The input weights' gradient has the whole row h0 non-finite (every input
    channel, also those silent wherever the gradient is non-finite): the sparse product must not skip
    them."""
    x, (t0, b0, _) = _input(seed=21 + recurrent)
    h0 = int(torch.randint(HIDDEN, (), generator=torch.Generator().manual_seed(t0)))
    grad_spikes = torch.randn(STEPS, BATCH, HIDDEN, generator=torch.Generator().manual_seed(1))
    grad_spikes[t0, b0, h0] = value
    ref = _grads(_layer(cls, recurrent, "reference"), x, grad_spikes)
    got = _grads(_layer(cls, recurrent, backend), x, grad_spikes)
    assert got.keys() == ref.keys()
    assert (~torch.isfinite(ref["weight_ih"][h0])).all()
    if not recurrent:  # the other neurons never see it
        assert torch.isfinite(ref["weight_ih"][torch.arange(HIDDEN) != h0]).all()
    for name in ref:
        assert torch.equal(torch.isfinite(got[name]), torch.isfinite(ref[name])), name
        finite = torch.isfinite(ref[name])
        assert torch.allclose(got[name][finite], ref[name][finite], rtol=1e-4, atol=1e-6), name


def test_finite_runs_are_unchanged_by_the_rule():
    """The rule adds 0 * (v - A) to the spikes: exact for every finite voltage (the C and torch loops
    still equal the reference bit for bit, tests/test_kernels.py), and spikes stay 0.0 or 1.0."""
    x, _ = _input(seed=8)
    for backend in BACKENDS:
        z, _ = _layer(ALIF, True, backend)(x)
        assert set(z.unique().tolist()) <= {0.0, 1.0}
        assert not any(math.copysign(1.0, v) < 0 for v in z.flatten().tolist())  # no -0.0


@pytest.mark.parametrize("bad", [NAN, INF])
def test_idx_file_with_a_non_finite_value_is_refused_when_read(tmp_path, bad):
    """A float idx file (type 0x0D, big-endian float32) with a NaN or inf: read_idx names the file and
    the first bad index (it used to pass into the images, where the latency code drops it silently)."""
    import struct

    import numpy as np

    from spikestab.data.mnist import read_idx

    path = tmp_path / "train-images-idx3-ubyte"

    def write(a):
        path.write_bytes(bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", *a.shape) + a.tobytes())

    images = np.random.default_rng(0).uniform(0.0, 1.0, (5, 4, 4)).astype(">f4")
    write(images)
    np.testing.assert_array_equal(read_idx(path), images)
    images[3, 1, 2] = bad
    images[4, 0, 0] = bad
    write(images)
    with pytest.raises(ValueError, match=rf"{path.name}: non-finite value {bad} at index \(3, 1, 2\)"):
        read_idx(path)


@pytest.mark.parametrize("recurrent", [False, True])
def test_non_finite_input_to_a_cuba_layer_stays_causal(recurrent):
    """CubaLIF: NaN spikes from t0 on in row b0 only; the feed-forward synaptic filter (one triangular
    matrix product) must not carry the NaN to the steps before it."""
    from spikestab.neurons.cuba import CubaLIF

    torch.manual_seed(0)
    layer = CubaLIF(INPUTS, HIDDEN, recurrent=recurrent)
    x, (t0, b0, i0) = _input(seed=6)
    x[t0, b0, i0] = NAN
    z, _ = layer(x)
    assert torch.equal(z.isnan().any(-1), torch.arange(STEPS)[:, None].ge(t0) & torch.arange(BATCH).eq(b0))
