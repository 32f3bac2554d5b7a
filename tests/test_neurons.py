"""LIF/ALIF layers against an independent step-by-step loop written here from the update equations."""

import math

import pytest
import torch

import spikestab
from spikestab import surrogate
from spikestab.neurons import RESETS, NeuronState


def reference_loop(x, w_ih, w_hh, b, alpha, thr, reset, detach, sg_f, rho=None, beta=None):
    """Plain re-statement of the update (docs/theory.md, "The neuron") with a straight-through spike whose
    gradient is the SG: z = H(u) + P(u) - P(u).detach(), with P' = SG. No spikestab code is used."""
    T, B, _ = x.shape
    H = w_ih.shape[0]
    v = torch.zeros(B, H, dtype=x.dtype)
    z = torch.zeros(B, H, dtype=x.dtype)
    a = torch.zeros(B, H, dtype=x.dtype)
    zs, vs = [], []
    for t in range(T):
        cur = x[t] @ w_ih.T + b
        if w_hh is not None:
            cur = cur + z @ w_hh.T
        if rho is not None:
            a = rho * a + (1 - rho) * z
            A = thr + beta * a
        else:
            A = thr
        zr = z.detach() if detach else z
        if reset == "subtract":
            r = A * z
            v = alpha * v + cur - (r.detach() if detach else r)
        elif reset == "multiplicative":
            v = alpha * v * (1 - zr) + cur
        elif reset == "multiplicative_all":
            v = (alpha * v + cur) * (1 - zr)
        else:
            v = alpha * v + cur
        u = v - A
        p = sg_f(u)
        z = (u > 0).to(x.dtype) + p - p.detach()
        zs.append(z)
        vs.append(v)
    return torch.stack(zs), torch.stack(vs)


def fast_sigmoid_primitive(d, s):
    # integral of d / (1 + 2 s |x|)^2 from 0 to u
    return lambda u: d * u / (1 + 2 * s * u.abs())


def _make(cls, reset, detach, recurrent, **kw):
    sg = surrogate.get("fast-sigmoid", dampening=0.5, sharpness=1.5)
    layer = cls(
        12,
        9,
        recurrent=recurrent,
        tau=5.0,
        threshold=0.5,
        reset=reset,
        detach_reset=detach,
        spike_fn=sg,
        bias=True,
        **kw,
    ).double()
    with torch.no_grad():
        layer.bias.uniform_(-0.1, 0.3)
        if recurrent:
            layer.weight_hh.mul_(2.0)
    return layer


def _reference_for(layer, x):
    w_hh = layer.recurrent_weight()
    extra = dict(rho=layer.rho, beta=layer.beta_adapt) if layer.adaptive else {}
    return reference_loop(
        x,
        layer.weight_ih,
        w_hh,
        layer.bias,
        layer.alpha,
        layer.threshold,
        layer.reset,
        layer.detach_reset,
        fast_sigmoid_primitive(0.5, 1.5),
        **extra,
    )


@pytest.mark.parametrize("cls", [spikestab.LIF, spikestab.ALIF])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("recurrent", [True, False])
def test_layer_matches_reference_loop_values_and_gradients(cls, reset, detach, recurrent):
    torch.manual_seed(1)
    layer = (
        _make(cls, reset, detach, recurrent, tau_adapt=7.0, beta_adapt=0.4)
        if cls is spikestab.ALIF
        else _make(cls, reset, detach, recurrent)
    )
    x = (torch.rand(50, 3, 12) < 0.3).double()
    z, v, _ = layer(x, return_voltage=True)
    zr, vr = _reference_for(layer, x)
    assert 0.02 < z.mean().item() < 0.98, "the test must exercise both spiking and silent steps"
    torch.testing.assert_close(z, zr.detach())
    torch.testing.assert_close(v, vr.detach())
    w = torch.randn_like(v)
    params = [layer.weight_ih, layer.bias] + ([layer.weight_hh] if recurrent else [])
    g = torch.autograd.grad(((z + 0.1 * v) * w).sum(), params)
    gr = torch.autograd.grad(((zr + 0.1 * vr) * w).sum(), params)
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_gradient_matches_finite_differences_on_smooth_voltage_path():
    """With reset="none", voltages are smooth in W_ih; their gradient through 50 recurrent steps equals
    central finite differences when spikes do not flip."""
    torch.manual_seed(3)
    layer = spikestab.LIF(6, 5, recurrent=True, tau=10.0, reset="none").double()
    x = torch.rand(50, 2, 6, dtype=torch.float64) * 0.2
    z, v, _ = layer(x, return_voltage=True)
    w = torch.randn_like(v)
    (g,) = torch.autograd.grad((v * w).sum(), layer.weight_ih)
    # spikes feed back through W_hh but are piecewise constant: FD sees only the smooth path, which is
    # what the autograd gradient of v is when the SG path is removed (dampening -> tiny)
    layer.spike_fn = surrogate.get("fast-sigmoid", dampening=1e-12)
    (g_smooth,) = torch.autograd.grad((layer(x, return_voltage=True)[1] * w).sum(), layer.weight_ih)
    h = 1e-6
    fd = torch.zeros_like(g_smooth)
    with torch.no_grad():
        for i in range(5):
            for j in range(6):
                layer.weight_ih[i, j] += h
                up = (layer(x, return_voltage=True)[1] * w).sum()
                layer.weight_ih[i, j] -= 2 * h
                dn = (layer(x, return_voltage=True)[1] * w).sum()
                layer.weight_ih[i, j] += h
                fd[i, j] = (up - dn) / (2 * h)
    torch.testing.assert_close(g_smooth, fd, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(g, g_smooth), "with a real SG the spike path must contribute"


@pytest.mark.parametrize("cls", [spikestab.LIF, spikestab.ALIF])
def test_state_round_trip(cls):
    layer = cls(8, 6, recurrent=True, tau=4.0, threshold=0.3)
    x = (torch.rand(40, 2, 8) < 0.4).float()
    z_full, v_full, s_full = layer(x, return_voltage=True)
    z1, v1, s1 = layer(x[:17], return_voltage=True)
    z2, v2, s2 = layer(x[17:], s1, return_voltage=True)
    torch.testing.assert_close(torch.cat([z1, z2]), z_full)
    torch.testing.assert_close(torch.cat([v1, v2]), v_full)
    for a, b in zip(s2, s_full):
        if a is not None:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls,cell_cls", [(spikestab.LIF, spikestab.LIFCell), (spikestab.ALIF, spikestab.ALIFCell)])
def test_cell_steps_equal_layer(cls, cell_cls):
    layer = cls(5, 4, threshold=0.2)
    cell = cell_cls(5, 4, threshold=0.2)
    cell.load_state_dict(layer.state_dict())
    x = (torch.rand(20, 3, 5) < 0.5).float()
    z, v, _ = layer(x, return_voltage=True)
    state = None
    for t in range(20):
        zt, vt, state = cell(x[t], state, return_voltage=True)
        torch.testing.assert_close(zt, z[t])
        torch.testing.assert_close(vt, v[t])


def test_batch_first_and_alpha_parameterisation():
    a = spikestab.LIF(5, 4, tau=8.0)
    b = spikestab.LIF(5, 4, alpha=math.exp(-1 / 8.0), batch_first=True)
    b.load_state_dict(a.state_dict())
    x = (torch.rand(30, 2, 5) < 0.5).float()
    torch.testing.assert_close(b(x.transpose(0, 1))[0].transpose(0, 1), a(x)[0])
    torch.testing.assert_close(a.alpha, torch.full((4,), math.exp(-1 / 8.0)))


def test_recurrent_diagonal_is_masked_by_default():
    layer = spikestab.LIF(3, 4, threshold=0.1)
    x = (torch.rand(30, 2, 3) < 0.5).float()
    z, _ = layer(x)
    z.sum().backward()
    assert torch.all(layer.weight_hh.grad.diagonal() == 0)
    assert layer.weight_hh.grad.abs().sum() > 0
    kept = spikestab.LIF(3, 4, recurrent_diagonal=True)
    assert torch.equal(kept.recurrent_weight(), kept.weight_hh)


def test_learnable_tau_and_threshold_receive_gradients():
    layer = spikestab.ALIF(4, 3, learn_tau=True, learn_threshold=True, threshold=0.2)
    z, _ = layer((torch.rand(25, 2, 4) < 0.5).float())
    z.sum().backward()
    assert layer.tau.grad is not None and layer.tau.grad.abs().sum() > 0
    assert layer.threshold.grad is not None and layer.threshold.grad.abs().sum() > 0
    frozen = spikestab.LIF(4, 3)
    assert not frozen.tau.requires_grad and not frozen.threshold.requires_grad


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(tau=0.0), "tau"),
        (dict(tau=-3.0), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(tau=1e8), "tau must be at most"),  # exp(-1/tau) rounds to 1: used to store tau = -inf
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=-0.5), "alpha"),
        (dict(threshold=float("inf")), "threshold"),
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=torch.ones(5)), "threshold"),
        (dict(reset="zero"), "reset"),
        (dict(backend="gpu-magic"), "backend"),
        (dict(spike_fn=torch.sigmoid), "spike_fn"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spikestab.LIF(3, 4, **kwargs)


def test_bad_sizes_and_alif_arguments():
    with pytest.raises(ValueError, match="hidden_size"):
        spikestab.LIF(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        spikestab.LIF(-1, 3)
    with pytest.raises(ValueError, match="tau_adapt"):
        spikestab.ALIF(3, 4, tau_adapt=0.0)


def test_bad_inputs_raise_before_work():
    layer = spikestab.LIF(3, 4)
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="input_size=3"):
        layer(torch.zeros(5, 2, 7))
    with pytest.raises(ValueError, match=r"state.v"):
        layer(torch.zeros(5, 2, 3), NeuronState(torch.zeros(3, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="rank 2"):
        spikestab.LIFCell(3, 4)(torch.zeros(5, 2, 3))


class _ShiftedCurrent:
    """A subclass hook: the input current plus a constant (what a custom input stage would change)."""

    SHIFT = 0.3

    def input_current(self, x):
        return super().input_current(x) + self.SHIFT


@pytest.mark.parametrize("base,cell", [(spikestab.LIF, spikestab.LIFCell), (spikestab.ALIF, spikestab.ALIFCell)])
@pytest.mark.parametrize("backend", ["auto", "reference", "fused", "native"])
def test_overridden_input_current_is_used_by_the_sequence_layer_and_record(base, cell, backend):
    # sparse float32 input: "auto" and "native" would otherwise take the event-driven projection, which
    # computes x W^T + b itself and bypassed the override
    from spikestab.stability.measure import record

    layer_cls = type("Shifted" + base.__name__, (_ShiftedCurrent, base), {})
    cell_cls = type("Shifted" + cell.__name__, (_ShiftedCurrent, cell), {})
    torch.manual_seed(4)
    kw = dict(recurrent=True, tau=5.0, threshold=0.5, bias=True, backend=backend)
    layer = layer_cls(12, 9, **kw)
    x = (torch.rand(40, 3, 12) < 0.05).float()
    z, v, _ = layer(x, return_voltage=True)
    step_cell = cell_cls(12, 9, **kw)
    step_cell.load_state_dict(layer.state_dict())
    state, zs = None, []
    for t in range(x.shape[0]):
        zt, state = step_cell(x[t], state)
        zs.append(zt)
    torch.testing.assert_close(z, torch.stack(zs))
    extra = dict(rho=layer.rho, beta=layer.beta_adapt) if layer.adaptive else {}
    zr, vr = reference_loop(
        x,
        layer.weight_ih,
        layer.recurrent_weight(),
        layer.bias + _ShiftedCurrent.SHIFT,
        layer.alpha,
        layer.threshold,
        layer.reset,
        layer.detach_reset,
        lambda u: u,
        **extra,
    )
    torch.testing.assert_close(v, vr.detach())
    plain = base(12, 9, **kw)
    plain.load_state_dict(layer.state_dict())
    assert not torch.equal(plain(x)[0], z), "the shift must change the output for this test to mean anything"
    assert torch.equal(record(layer, x).z, z)


def test_checkpoint_with_overridden_input_current_is_refused():
    # the checkpointed segments recompute W_ih x + b themselves: refused rather than silently bypassed
    layer = type("ShiftedLIF", (_ShiftedCurrent, spikestab.LIF), {})(4, 3, checkpoint=2)
    with pytest.raises(ValueError, match="checkpoint must be False"):
        layer(torch.zeros(6, 1, 4))
    plain = spikestab.LIF(4, 3, checkpoint=2)
    assert plain(torch.zeros(6, 1, 4))[0].shape == (6, 1, 3)
