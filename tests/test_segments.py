"""Checkpointed (segment-recomputed) LIF/ALIF layers against the reference autograd loop, and the
activation memory they keep for backward."""

import copy

import pytest
import torch

from spikestab import kernels
from spikestab.kernels import segments, sparse
from spikestab.kernels.segments import segment_steps
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons.functional import NeuronState
from spikestab.neurons.layers import ALIF, LIF
from spikestab.surrogate import SurrogateGradient

STEPS, BATCH, INPUTS, HIDDEN = 14, 4, 5, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(cls, recurrent=True, reset="subtract", detach=True, learnable_sg=False):
    sg = SurrogateGradient("fast-sigmoid", dampening=0.8, sharpness=1.3, learnable=learnable_sg)
    layer = cls(
        INPUTS,
        HIDDEN,
        recurrent=recurrent,
        tau=torch.linspace(3.0, 12.0, HIDDEN),
        threshold=torch.linspace(0.6, 1.2, HIDDEN),
        reset=reset,
        detach_reset=detach,
        spike_fn=sg,
        bias=True,
        learn_tau=True,
        learn_threshold=True,
        **(dict(tau_adapt=7.0, beta_adapt=0.7) if cls.adaptive else {}),
    )
    with torch.no_grad():
        layer.bias.uniform_(-0.2, 0.4)
    return layer


def _inputs(adaptive, binary=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(STEPS, BATCH, INPUTS, generator=g) * 1.5
    if binary:  # sparse spikes: the event-driven products
        x = (torch.rand(STEPS, BATCH, INPUTS, generator=g) < 0.1).float() * 4.0
    state = NeuronState(
        torch.rand(BATCH, HIDDEN, generator=g) * 0.8,
        (torch.rand(BATCH, HIDDEN, generator=g) < 0.3).float(),
        torch.rand(BATCH, HIDDEN, generator=g) * 0.5 if adaptive else None,
    )
    readout = [torch.randn(STEPS, BATCH, HIDDEN, generator=g) for _ in range(2)]
    readout += [torch.randn(BATCH, HIDDEN, generator=g) for _ in range(3)]
    return x, state, readout


def _run(layer, backend, checkpoint, x, state, readout):
    """Loss touching every output (spikes, voltages, final state); returns outputs and all gradients."""
    layer = copy.deepcopy(layer)
    layer.backend, layer.checkpoint = backend, checkpoint
    x = x.clone().requires_grad_(True)
    st = NeuronState(*(s.clone().requires_grad_(True) if s is not None else None for s in state))
    z, v, (v_end, z_end, a_end) = layer(x, st, return_voltage=True)
    loss = (readout[0] * z).sum() + (readout[1] * v).sum() + (readout[2] * v_end).sum() + (readout[3] * z_end).sum()
    if a_end is not None:
        loss = loss + (readout[4] * a_end).sum()
    loss.backward()
    grads = {"x": x.grad, "v0": st.v.grad, "z0": st.z.grad, "a0": st.a.grad if st.a is not None else None}
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.requires_grad})
    return z.detach(), v.detach(), grads


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _compare(layer, checkpoint, backend="auto", binary=False, tol=1e-5):
    x, state, readout = _inputs(layer.adaptive, binary)
    z_ref, v_ref, g_ref = _run(layer, "reference", False, x, state, readout)
    z, v, g = _run(layer, backend, checkpoint, x, state, readout)
    assert 0.05 < z_ref.mean() < 0.95, "test input must make the neurons spike sometimes"
    assert torch.equal(z, z_ref)
    assert _rel(v, v_ref) < tol
    assert g.keys() == g_ref.keys() and g_ref["weight_ih"].abs().sum() > 0
    for name, ref in g_ref.items():
        if ref is None:  # no path from the loss (e.g. z0 of a detached feed-forward layer)
            assert g[name] is None or not g[name].any(), name
        else:
            assert _rel(g[name], ref) < tol, (name, _rel(g[name], ref))


@pytest.mark.parametrize("checkpoint", [1, 5, True, STEPS, 40])  # 5: T not divisible; True: 4 steps
@pytest.mark.parametrize("reset", ["subtract", "multiplicative_all"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_checkpointed_equals_reference(cls, recurrent, detach, reset, checkpoint):
    _compare(_layer(cls, recurrent, reset, detach), checkpoint)


@pytest.mark.parametrize("reset", ["multiplicative", "none"])
@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_checkpointed_other_resets(cls, reset):
    _compare(_layer(cls, True, reset, False), 3)


@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_checkpointed_native_and_reference_backends(cls):
    assert sparse.runs_natively(torch.zeros(1)), "the C loops must build here (gcc is a CI requirement)"
    _compare(_layer(cls, True, "subtract", False), 4, backend="auto", binary=True)
    _compare(_layer(cls, True, "multiplicative", True), 4, backend="reference")


def test_checkpointed_learnable_surrogate():
    """Learnable SG parameters: the fused kernel hands the segment to the reference loop."""
    _compare(_layer(ALIF, True, "subtract", False, learnable_sg=True), 6, backend="fused")


def test_segment_steps():
    assert segment_steps(True, 250) == 16 and segment_steps(True, 1) == 1 and segment_steps(True, 17) == 5
    assert segment_steps(7, 250) == 7 and segment_steps(1000, 250) == 1000


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", None, 1.0])
def test_bad_checkpoint_raises(bad):
    with pytest.raises(ValueError, match="checkpoint"):
        LIF(3, 4, checkpoint=bad)
    with pytest.raises(ValueError, match="checkpoint"):
        SNNClassifier(SNNConfig(3, 2, hidden_sizes=(4,), checkpoint=bad))


@pytest.mark.parametrize("backend", ["auto", "native", "fused", "reference"])
def test_segments_project_as_the_whole_input(backend, monkeypatch):
    """Every segment (and its recomputation) computes the projection the way the non-checkpointed
    layer does for the whole x, also when a segment's own density would choose the other way (here:
    dense first steps, then silence: 25% overall, so "auto" projects densely)."""
    mixed = torch.cat([torch.ones(10, 3, 50), torch.zeros(30, 3, 50)])
    layer = LIF(50, 6, backend=backend, checkpoint=10)
    whole = kernels.sparse_projection(mixed, layer.weight_ih, layer.bias, backend)
    if backend == "auto" and sparse.runs_natively(mixed):
        assert kernels.sparse_projection(mixed[20:], layer.weight_ih, layer.bias, backend) != whole
    seen = []

    def spy(x, weight, bias, be, sparse_x=None):
        seen.append(sparse_x)
        return kernels.prepare(x, weight, bias, be, sparse_x)

    monkeypatch.setattr(segments, "prepare", spy)
    z, _ = layer(mixed.requires_grad_(True))
    z.sum().backward()
    assert len(seen) == 8 and set(seen) == {whole}  # 4 segments, each run once more in backward


def test_no_grad_and_batch_first_give_the_same_spikes():
    layer = _layer(ALIF)
    x, state, _ = _inputs(True)
    z_ref, _ = layer(x, state)
    ckpt = copy.deepcopy(layer)
    ckpt.checkpoint = 3
    with torch.no_grad():
        assert torch.equal(ckpt(x, state)[0], z_ref)
    ckpt.batch_first = True
    assert torch.equal(ckpt(x.transpose(0, 1), state)[0].transpose(0, 1), z_ref)


def test_classifier_with_checkpoint_config():
    cfg = dict(input_size=INPUTS, output_size=3, hidden_sizes=(8, 8), net="alif", dropout=0.0)
    x = torch.rand(STEPS, BATCH, INPUTS) * 2
    grads = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        model = SNNClassifier(SNNConfig(**cfg, checkpoint=checkpoint))
        assert all(layer.checkpoint is checkpoint for layer in model.stack.layers)
        logits = model(x)
        logits.square().sum().backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        assert _rel(b, a) < 1e-5


def _saved_activation_bytes(layer, x):
    """Bytes of the distinct storages autograd keeps for backward, beyond the input, the output
    spikes and the parameters (as benchmarks/bench_layers.py counts "saved activations")."""
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z, _ = layer(x)
    for t in [x, z, *layer.parameters()]:
        saved.pop(t.untyped_storage().data_ptr(), None)
    return sum(saved.values())


@pytest.mark.parametrize("cls", [LIF, ALIF])
def test_checkpointed_activation_memory_at_most_a_third_of_reference(cls):
    steps, batch, hidden = 250, 8, 64
    x = (torch.rand(steps, batch, 100) < 0.05).float()
    mem = {}
    for name, kw in {
        "reference": dict(backend="reference"),
        "fused": dict(backend="fused"),
        "checkpointed": dict(checkpoint=True),
    }.items():
        torch.manual_seed(3)
        mem[name] = _saved_activation_bytes(cls(100, hidden, **kw), x)
    entry = batch * hidden * 4
    # the reference loop keeps about two floats per [T, B, H] entry, the fused kernel one (voltages)
    assert mem["reference"] >= 2 * steps * entry and mem["fused"] >= steps * entry
    assert mem["checkpointed"] <= mem["reference"] / 3, mem
    # what is left: the state (v, z[, a]) entering each of the 16 segments, the recurrent mask
    n_state = 3 if cls is ALIF else 2
    assert mem["checkpointed"] <= 16 * n_state * entry + hidden * hidden * 4, mem
