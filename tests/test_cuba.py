"""The current-based LIF equals an independent step-by-step loop (values and gradients), feed-forward
(every kernel backend) and recurrent, and refuses bad parameters by name."""

import pytest
import torch

from spikestab.neurons.cuba import CubaLIF, CubaState
from spikestab.surrogate import SurrogateGradient


def hand_loop(x, w_ih, b, w_hh, alpha, alpha_syn, thr, reset, damp=1.0, sharp=1.0):
    """CUBA LIF written out from its equations, with a hand-made fast-sigmoid surrogate."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > 0).to(u.dtype)

        @staticmethod
        def backward(ctx, g):
            (u,) = ctx.saved_tensors
            return g * damp / (1 + 2 * (sharp * u).abs()) ** 2

    T, B, _ = x.shape
    H = w_ih.shape[0]
    v = x.new_zeros(B, H)
    z = x.new_zeros(B, H)
    i = x.new_zeros(B, H)
    zs, vs = [], []
    for t in range(T):
        i = alpha_syn * i + x[t] @ w_ih.t() + b + (z @ w_hh.t() if w_hh is not None else 0.0)
        zd = z.detach()
        if reset == "subtract":
            v = alpha * v + i - thr * zd
        elif reset == "multiplicative":
            v = alpha * v * (1 - zd) + i
        else:
            v = alpha * v + i
        z = Spike.apply(v - thr)
        zs.append(z)
        vs.append(v)
    return torch.stack(zs), torch.stack(vs)


@pytest.mark.parametrize(
    "recurrent,backend,reset",
    [
        (False, "reference", "subtract"),
        (False, "fused", "subtract"),
        (False, "native", "multiplicative"),
        (True, "auto", "subtract"),
        (True, "auto", "none"),
    ],
)
def test_cuba_matches_hand_loop(recurrent, backend, reset):
    torch.manual_seed(0)
    T, B, I, H = 30, 3, 7, 6  # noqa: E741 (I: the input width)
    layer = CubaLIF(
        I,
        H,
        recurrent=recurrent,
        tau=8.0,
        tau_syn=3.0,
        threshold=0.7,
        reset=reset,
        bias=True,
        backend=backend,
        spike_fn=SurrogateGradient("fast-sigmoid", 0.8, 1.3),
    )
    with torch.no_grad():
        layer.weight_ih.mul_(3.0)
        layer.bias.uniform_(-0.1, 0.2)
    x = (torch.rand(T, B, I) < 0.3).float()
    z, v, state = layer(x, return_voltage=True)
    w_hh = layer.recurrent_weight() if recurrent else None
    zr, vr = hand_loop(
        x, layer.weight_ih, layer.bias, w_hh, layer.alpha, layer.alpha_syn, layer.threshold, reset, 0.8, 1.3
    )
    assert 0.05 < z.mean() < 0.95  # spikes and resets are exercised
    assert torch.equal(z, zr) and torch.allclose(v, vr, atol=1e-5)
    assert torch.allclose(state.v, vr[-1], atol=1e-5) and isinstance(state, CubaState)
    g = torch.randn(T, B, H)
    params = [layer.weight_ih, layer.bias] + ([layer.weight_hh] if recurrent else [])
    ours = torch.autograd.grad((z * g).sum() + (v * g).sum(), params)
    ref = torch.autograd.grad((zr * g).sum() + (vr * g).sum(), params)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("recurrent,seed", [(True, 1), (False, 5)])
def test_cuba_state_carries_over(recurrent, seed):
    """A sequence run in two pieces, the state handed over, gives the spikes of one run (the feed-forward
    layer's one-product synaptic filter included)."""
    torch.manual_seed(seed)
    layer = CubaLIF(5, 4, recurrent=recurrent, tau=6.0, tau_syn=2.0, threshold=0.5)
    x = (torch.rand(20, 2, 5) < 0.4).float()
    z_full, _ = layer(x)
    z1, s1 = layer(x[:9])
    z2, _ = layer(x[9:], s1)
    assert torch.equal(z_full, torch.cat([z1, z2]))


def test_cuba_tends_to_lif_and_refuses_bad_input():
    with pytest.raises(ValueError, match="tau_syn"):
        CubaLIF(3, 4, tau_syn=-1.0)
    with pytest.raises(ValueError, match="alpha_syn"):
        CubaLIF(3, 4, alpha_syn=1.5)
    with pytest.raises(ValueError, match="checkpoint"):
        CubaLIF(3, 4, checkpoint=True)
    with pytest.raises(ValueError, match="stabilize='none'"):
        CubaLIF(3, 4).dynamics()


def test_tau_syn_defaults_to_half_the_membrane_constant():
    layer = CubaLIF(3, 4, tau=torch.tensor([4.0, 6.0, 8.0, 10.0]))
    assert torch.allclose(layer.tau_syn, torch.tensor([2.0, 3.0, 4.0, 5.0]))
    assert torch.allclose(CubaLIF(3, 4, tau=8.0, tau_syn=1.5).tau_syn, torch.full((4,), 1.5))


def test_synaptic_filter_product_equals_step_loop():
    from spikestab.neurons.cuba import synaptic_filter

    torch.manual_seed(4)
    cur, i0 = torch.randn(40, 3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for beta in (torch.full((5,), 0.7, dtype=torch.float64), torch.linspace(0.2, 0.9, 5, dtype=torch.float64)):
        i, ref = i0, []
        for t in range(40):
            i = beta * i + cur[t]
            ref.append(i)
        assert torch.allclose(synaptic_filter(cur, beta, i0), torch.stack(ref), atol=1e-12)
