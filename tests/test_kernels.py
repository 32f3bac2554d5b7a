"""Fused BPTT kernel against the reference autograd loop (the ground truth), for every configuration."""

import copy

import pytest
import torch

from spikestab import kernels
from spikestab.dynamics import RESETS, NeuronState
from spikestab.kernels import run_auto, run_fused, run_native, sparse
from spikestab.kernels.native import native_blocker
from spikestab.neurons.layers import ALIF, LIF
from spikestab.surrogate import SHAPES, SurrogateGradient


def adaptation(cls) -> dict:
    """The adaptation arguments of the test layers (ALIF's only: a LIF refuses them)."""
    return dict(tau_adapt=7.0, beta_adapt=0.7) if cls.adaptive else {}


def _layer(cls, recurrent, reset, detach, shape, dtype=torch.float32, learnable_sg=False):
    tail = 1.56 if shape == "q-pseudospike" else None
    sg = SurrogateGradient(shape, dampening=0.8, sharpness=1.3, tail=tail, learnable=learnable_sg)
    tau = torch.linspace(3.0, 12.0, 6)
    layer = cls(
        4,
        6,
        recurrent=recurrent,
        tau=tau,
        threshold=torch.linspace(0.6, 1.2, 6),
        reset=reset,
        detach_reset=detach,
        spike_fn=sg,
        bias=True,
        learn_tau=True,
        learn_threshold=True,
        backend="reference",
        **adaptation(cls),
    )
    with torch.no_grad():
        layer.bias.uniform_(-0.2, 0.4)
    return layer.to(dtype)


def _run(layer, backend, x, state, weights):
    """Loss touching every output (spikes, voltages, final state) with fixed random weights."""
    layer = copy.deepcopy(layer)
    layer.backend = backend
    x = x.clone().requires_grad_(True)
    st = NeuronState(*(s.clone().requires_grad_(True) if s is not None else None for s in state))
    z, v, (vT, zT, aT) = layer(x, st, return_voltage=True)
    loss = (weights[0] * z).sum() + (weights[1] * v).sum() + (weights[2] * vT).sum() + (weights[3] * zT).sum()
    if aT is not None:
        loss = loss + (weights[4] * aT).sum()
    loss.backward()
    grads = {"x": x.grad, "v0": st.v.grad, "z0": st.z.grad}
    if st.a is not None:
        grads["a0"] = st.a.grad
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.requires_grad})
    return z.detach(), v.detach(), grads


def _inputs(layer, steps=14, batch=3, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, batch, 4, generator=g) * 1.5).to(dtype)
    h = layer.hidden_size
    state = NeuronState(
        (torch.rand(batch, h, generator=g) * 0.8).to(dtype),
        (torch.rand(batch, h, generator=g) < 0.3).to(dtype),
        (torch.rand(batch, h, generator=g) * 0.5).to(dtype) if layer.adaptive else None,
    )
    weights = [torch.randn(steps, batch, h, generator=g).to(dtype), torch.randn(steps, batch, h, generator=g).to(dtype)]
    weights += [torch.randn(batch, h, generator=g).to(dtype) for _ in range(3)]
    return x, state, weights


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _compare(layer, dtype, tol, seed=1, backend="fused", binary=False):
    x, state, weights = _inputs(layer, dtype=dtype, seed=seed)
    if binary:
        x = (x > 0.9).to(dtype)
    z_ref, v_ref, g_ref = _run(layer, "reference", x, state, weights)
    z_f, v_f, g_f = _run(layer, backend, x, state, weights)
    assert 0.05 < z_ref.mean() < 0.95, "test input must make the neurons spike sometimes"
    assert torch.equal(z_f, z_ref)
    assert _rel(v_f, v_ref) < tol
    assert g_f.keys() == g_ref.keys()
    assert g_ref["x"].abs().sum() > 0 and g_ref["weight_ih"].abs().sum() > 0
    for name in g_ref:
        if g_ref[name] is None:  # no path from the loss (e.g. z0 of a detached feed-forward layer)
            assert g_f[name] is None or not g_f[name].any(), name
        else:
            assert _rel(g_f[name], g_ref[name]) < tol, (name, _rel(g_f[name], g_ref[name]))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("detach", [True, False])
def test_fused_equals_reference_float32(shape, reset, cls, recurrent, detach):
    _compare(_layer(cls, recurrent, reset, detach, shape), torch.float32, 1e-5)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("detach", [True, False])
def test_fused_equals_reference_float64(reset, cls, detach):
    _compare(_layer(cls, True, reset, detach, "exponential", torch.float64), torch.float64, 1e-12, seed=3)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("detach", [True, False])
def test_native_equals_reference(reset, cls, detach):
    assert sparse.runs_natively(torch.zeros(1)), "the C loops must build here (gcc is a CI requirement)"
    _compare(_layer(cls, True, reset, detach, "fast-sigmoid"), torch.float32, 1e-5, backend="native", binary=True)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("detach", [True, False])
def test_native_feed_forward_equals_reference(reset, cls, detach):
    """Feed-forward layers: the C loops without a recurrent product."""
    _compare(_layer(cls, False, reset, detach, "fast-sigmoid"), torch.float32, 1e-5, backend="native", binary=True)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("cls,reset", [(ALIF, "subtract"), (LIF, "multiplicative_all")])
def test_native_loops_with_every_surrogate_shape(shape, cls, reset):
    """The C backward evaluates the rational shapes (``sparse.SURROGATE_CODES``) itself; the others
    come from torch. Per-step ALIF thresholds and the pre-reset voltages enter both."""
    _compare(_layer(cls, True, reset, False, shape), torch.float32, 1e-5, backend="native", binary=True)


@pytest.mark.parametrize("hidden", [7, 150])  # below one column block; two blocks and a tail
def test_event_products_equal_dense_products(hidden):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(40, 30, generator=g) < 0.1).float() * torch.randn(40, 30, generator=g)  # any values
    x[3] = 0.0  # an empty row
    w, grad, b = (
        torch.randn(hidden, 30, generator=g),
        torch.randn(40, hidden, generator=g),
        torch.randn(hidden, generator=g),
    )
    nz = sparse.nonzeros(x)
    assert torch.equal(nz.rowptr[1:], x.count_nonzero(1).cumsum(0)) and torch.equal(nz.cols.long(), x.nonzero()[:, 1])
    assert torch.equal(nz.vals, x[x != 0])
    torch.testing.assert_close(sparse.sparse_mm(nz, w.t().contiguous(), b), x @ w.t() + b)
    torch.testing.assert_close(sparse.sparse_mm(nz, w.t().contiguous()), x @ w.t())
    torch.testing.assert_close(sparse.sparse_mm_t(nz, grad), x.t() @ grad)


def test_density_estimate_on_a_row_sample():
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(4000, 300, generator=g) < 0.07).float()
    assert abs(sparse.density(x) - 0.07) < 0.01
    assert sparse.density(torch.ones(5)) == 1.0 and sparse.density(torch.tensor(0.0)) == 0.0


def test_index_in_row_chunks_equals_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(50, 30, generator=g) < 0.2).float() * torch.randn(50, 30, generator=g)
    whole = sparse.nonzeros(x)
    monkeypatch.setattr(sparse, "_INDEX_CHUNK", 70)  # 2 rows per chunk: 25 C calls
    chunked = sparse.nonzeros(x)
    for a, b in zip(whole[:3], chunked[:3]):
        assert torch.equal(a, b)
    assert sparse.nonzeros(torch.zeros(0, 30)).rowptr.tolist() == [0]


def test_auto_uses_event_products_only_for_sparse_inputs():
    """CPU float32: C time loops always, the event-driven projection for sparse input only."""
    w, b = torch.randn(6, 50), torch.zeros(6)
    sparse_x = (torch.rand(20, 3, 50) < 0.05).float()
    dense_x = (torch.rand(20, 3, 50) < 0.5).float()

    def projection(x, backend):
        current, kernel = kernels.prepare(x, w.to(x.dtype).requires_grad_(True), b.to(x.dtype), backend)
        return type(current.grad_fn).__name__, kernel

    assert projection(sparse_x, "auto") == ("_EventLinearBackward", run_auto)
    assert projection(dense_x, "auto")[1] is run_auto and projection(dense_x, "auto")[0] != "_EventLinearBackward"
    assert projection(dense_x, "native") == ("_EventLinearBackward", run_native)
    assert projection(sparse_x, "fused")[1] is run_fused and projection(sparse_x, "fused")[0] != "_EventLinearBackward"
    # float64: dense projection; run_auto then takes the torch loop (C loops: float32 only)
    assert projection(sparse_x.double(), "auto") == ("ViewBackward0", run_auto)


def test_learnable_surrogate_falls_back_to_reference_gradients():
    layer = _layer(ALIF, True, "subtract", True, "gaussian", learnable_sg=True)
    _compare(layer, torch.float32, 1e-5)
    assert layer.spike_fn.dampening.requires_grad


def test_auto_runs_the_c_loops_and_falls_back_to_the_torch_loop():
    """ "auto" runs the native kernel where it can; where the C loops cannot run (here float64) it is
    exactly the torch loop of "fused"."""
    assert kernels.select("auto") is run_auto
    layer = _layer(LIF, True, "subtract", False, "fast-sigmoid", dtype=torch.float64)
    x, state, _ = _inputs(layer, steps=20, dtype=torch.float64)
    current = layer.input_current(x)
    out_auto = kernels.select("auto")(current, layer.recurrent_weight(), layer.dynamics(), state, True)
    out_fused = run_fused(current, layer.recurrent_weight(), layer.dynamics(), state, True)
    assert torch.equal(out_auto[0], out_fused[0]) and torch.equal(out_auto[1], out_fused[1])


def test_no_grad_inference_and_chained_states_match_reference():
    layer = _layer(ALIF, True, "subtract", True, "fast-sigmoid")
    x, state, _ = _inputs(layer, steps=20)
    fused = copy.deepcopy(layer)
    fused.backend = "fused"
    with torch.no_grad():
        z_ref, st_ref = layer(x, state)
        z1, st = fused(x[:8], state)
        z2, st = fused(x[8:], st)
    assert torch.equal(torch.cat([z1, z2]), z_ref)
    for a, b in zip(st, st_ref):
        torch.testing.assert_close(a, b)


def _graph_bytes(layer, x):
    """Bytes of the distinct storages autograd keeps for backward beyond the layer's input, output
    and parameters: the activation memory the time loop adds."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z, _ = layer(x)
    for t in [x, z, *layer.parameters(), *layer.buffers()]:
        storages.pop(t.untyped_storage().data_ptr(), None)
    return sum(storages.values())


@pytest.mark.parametrize("learn", [False, True])
def test_fused_lif_keeps_only_the_voltages(learn):
    layer = LIF(8, 32, recurrent=True, backend="reference", learn_tau=learn, learn_threshold=learn)
    x = (torch.rand(250, 4, 8) < 0.2).float()
    ref = _graph_bytes(layer, x)
    layer.backend = "fused"
    fused = _graph_bytes(layer, x)
    volts = 250 * 4 * 32 * 4
    assert fused <= volts + 2 * 4 * 32 * 4 + 32 * 32 * 4  # voltages (+ initial v, z and the masked W_hh)
    # the reference keeps the centred voltage and the spikes of every step (+ the voltage if tau learns)
    assert ref >= (3 if learn else 2) * volts


def _wide_case(
    cls,
    reset,
    detach,
    batch,
    steps,
    hidden=40,
    inputs=30,
    rec_scale=1.0,
    in_scale=1.0,
    seed=7,
    sg=None,
    density=0.1,
):
    """A layer wider than one register panel (40 = 16 + 16 + 8 neurons) with binary input (``density``
    non-zeros), and the random state and loss weights of ``_run``; the scales of the input and recurrent
    weights set how dense the hidden spikes get; ``sg`` defaults to a fast sigmoid."""
    g = torch.Generator().manual_seed(seed)
    sg = sg or SurrogateGradient("fast-sigmoid", dampening=0.8, sharpness=1.3)
    layer = cls(
        inputs,
        hidden,
        recurrent=True,
        tau=torch.linspace(3.0, 12.0, hidden),
        threshold=torch.linspace(0.6, 1.2, hidden),
        reset=reset,
        detach_reset=detach,
        spike_fn=sg,
        bias=True,
        learn_tau=True,
        learn_threshold=True,
        backend="reference",
        **adaptation(cls),
    )
    with torch.no_grad():
        layer.weight_ih.copy_(torch.randn(hidden, inputs, generator=g) * 0.6 * in_scale)
        layer.weight_hh.copy_(torch.randn(hidden, hidden, generator=g) * 0.3 * rec_scale)
        layer.bias.uniform_(-0.2 * in_scale, 0.3 * in_scale, generator=g)
    x = (torch.rand(steps, batch, inputs, generator=g) < density).float()
    state = NeuronState(
        torch.rand(batch, hidden, generator=g) * 0.8,
        (torch.rand(batch, hidden, generator=g) < 0.3).float(),
        torch.rand(batch, hidden, generator=g) * 0.5 if layer.adaptive else None,
    )
    weights = [torch.randn(steps, batch, hidden, generator=g) for _ in range(2)]
    weights += [torch.randn(batch, hidden, generator=g) for _ in range(3)]
    return layer, x, state, weights


def _compare_runs(layer, x, state, weights, backend, tol=1e-5):
    z_ref, v_ref, g_ref = _run(layer, "reference", x, state, weights)
    z_f, v_f, g_f = _run(layer, backend, x, state, weights)
    assert torch.equal(z_f, z_ref)
    assert _rel(v_f, v_ref) < tol
    assert g_f.keys() == g_ref.keys()
    for name in g_ref:
        assert _rel(g_f[name], g_ref[name]) < tol, (name, _rel(g_f[name], g_ref[name]))
    return z_ref


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("batch,steps,threads", [(1, 1, 1), (13, 9, 3), (32, 6, 2), (5, 12, 1)])
def test_native_loops_equal_reference_at_any_width_batch_and_thread_count(reset, cls, batch, steps, threads):
    """The C time loops tile batch rows by thread count (1 to 6 rows per register tile) and neurons
    by 16-column panels: every tiling, T = 1 and B = 1, state in and out, against the reference."""
    layer, x, state, weights = _wide_case(cls, reset, False, batch, steps)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z = _compare_runs(layer, x, state, weights, "native")
    finally:
        torch.set_num_threads(before)
    assert 0.0 < z.mean() < 1.0


@pytest.mark.parametrize("rec_scale,in_scale,expect", [(0.2, 0.3, "sparse"), (4.0, 1.0, "dense")])
def test_native_loops_with_sparse_and_dense_hidden_spikes(rec_scale, in_scale, expect):
    """The recurrent products skip silent columns: a few % of hidden spikes, or about half spiking."""
    layer, x, state, weights = _wide_case(LIF, "subtract", True, 8, 30, rec_scale=rec_scale, in_scale=in_scale)
    rate = _compare_runs(layer, x, state, weights, "native").mean().item()
    assert (rate < 0.1) if expect == "sparse" else (0.3 < rate < 0.7), rate


def test_native_loops_without_any_spike():
    """No input and no initial spikes: empty non-zero lists everywhere; gradients still reach the
    state, the leak and the threshold; the weight gradients are exactly zero."""
    layer, x, state, weights = _wide_case(ALIF, "subtract", False, 4, 10)
    x.zero_()
    with torch.no_grad():
        layer.bias.zero_()
    state = NeuronState(state.v * 0.1, torch.zeros_like(state.z), state.a)
    z = _compare_runs(layer, x, state, weights, "native")
    assert not z.any()


def test_explicit_native_refuses_float64_and_auto_takes_the_torch_loop():
    """An explicit backend "native" that cannot run raises (no silent fallback); "auto" runs the torch
    loop there, equal to the reference."""
    layer, x, state, weights = _wide_case(LIF, "multiplicative", False, 3, 8)
    state64 = NeuronState(*(s.double() for s in state[:2]))
    _compare_runs(layer.double(), x.double(), state64, [w.double() for w in weights], "auto", 1e-12)
    with pytest.raises(RuntimeError, match="backend 'native' cannot run here: .*CPU float32"):
        _compare_runs(layer.double(), x.double(), state64, [w.double() for w in weights], "native", 1e-12)
    assert "float32" in native_blocker(
        torch.zeros(4, 3, 40, dtype=torch.float64),
        None,
        layer.double().dynamics(),
        NeuronState(torch.zeros(3, 40), torch.zeros(3, 40)),
    )


@pytest.mark.parametrize("backend", sorted(kernels.BACKENDS))
def test_kernels_refuse_an_adaptive_run_without_its_adaptation_state(backend):
    """An ALIF layer's dynamics with a state lacking ``a``, called on a kernel directly (the layers check
    their state), is a ValueError naming what is missing on every backend."""
    layer = _layer(ALIF, True, "subtract", True, "fast-sigmoid")
    x, state, _ = _inputs(layer)
    with pytest.raises(ValueError, match=r"missing \['state.a'\]"):
        kernels.select(backend)(
            layer.input_current(x), layer.recurrent_weight(), layer.dynamics(), NeuronState(*state[:2]), False
        )
