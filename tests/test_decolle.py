"""DECOLLE: the step equals the hand-written P/Q/R equations, no gradient crosses layers or time steps
(autograd), the local loss falls on a small task, the rate term is exactly zero after the switch epoch when
no f_to is given, and bad settings are refused by name."""

import pytest
import torch
from torch import nn

from spikestab.decolle import (
    DecolleLayer,
    RateControl,
    conv_decolle,
    dense_decolle,
    evaluate,
    local_losses,
    train_epoch,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_step_matches_equations():
    torch.manual_seed(0)
    layer = DecolleLayer(nn.Linear(6, 4), (4,), 3, alpha=0.9, beta=0.8, alpha_rp=0.6, w_rp=1.5)
    x = (torch.rand(12, 2, 6) < 0.5).float()
    st = layer.init_state(x[0])
    p = q = torch.zeros(2, 6)
    r = s = torch.zeros(2, 4)
    w, b = layer.base.weight.detach(), layer.base.bias.detach()
    fired = 0.0
    for t in range(12):
        out, y, u, st = layer(x[t], st)
        q = 0.8 * q + 0.2 * x[t]
        p = 0.9 * p + 0.1 * q
        r = 0.6 * r - 0.4 * 1.5 * s
        u_ref = p @ w.t() + b + r
        s = (u_ref > 0).float()
        assert torch.allclose(u, u_ref, atol=1e-6) and torch.equal(out, s)
        assert torch.allclose(y, layer.readout(s), atol=1e-6)
        fired += float(s.mean())
    assert 0 < fired < 12  # spikes and the refractory term are exercised


def test_no_gradient_across_layers_or_steps():
    torch.manual_seed(1)
    net = dense_decolle(8, (6, 5), 3)
    x = (torch.rand(4, 2, 8) < 0.5).float().requires_grad_(True)
    states = net.init_state(x[0])
    states = net.step(x[0], states)[3]
    _spikes, readouts, _, _ = net.step(x[1], states)
    target = torch.eye(3)[[0, 2]]
    l0, l1 = local_losses(readouts, target)
    w0, w1 = net.layers[0].base.weight, net.layers[1].base.weight
    g = torch.autograd.grad(l1, [w0, w1, x], allow_unused=True)
    assert g[0] is None and g[1] is not None and g[1].abs().sum() > 0  # layer 1's loss trains layer 1 only
    assert g[2] is None  # nor reaches any input (the layer-0 output is passed on detached)
    g = torch.autograd.grad(l0, [w0, x], allow_unused=True)
    assert g[0] is not None and g[1] is None  # not through time: x[0] and x[1] enter only via detached traces
    # the readouts are fixed
    assert not any(p.requires_grad for layer in net.layers for p in layer.readout.parameters())


def toy_batches(seed, n_batches=6, batch=16, steps=30, width=20):
    """Two classes: Poisson inputs on the first or the second half of the channels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        labels = torch.randint(0, 2, (batch,), generator=g)
        rate = torch.full((batch, width), 0.05)
        rate[labels == 0, : width // 2] = 0.4
        rate[labels == 1, width // 2 :] = 0.4
        out.append(((torch.rand(steps, batch, width, generator=g) < rate).float(), labels))
    return out


def test_local_loss_falls_on_a_small_task():
    torch.manual_seed(2)
    net = dense_decolle(20, (32, 32), 2)
    opt = torch.optim.Adamax(net.parameters(), lr=3e-3, betas=(0.0, 0.95))
    data, test = toy_batches(0), toy_batches(1, n_batches=2)
    before = evaluate(net, test, burn_in=5)
    records = [train_epoch(net, opt, data, epoch, burn_in=5) for epoch in range(3)]
    after = evaluate(net, test, burn_in=5)
    assert all(a < 0.6 * b for a, b in zip(after["loss"], before["loss"])), (before, after)
    assert all(a < b for a, b in zip(records[-1]["loss"], records[0]["loss"]))
    assert min(before["accuracy"]) < 0.7 and min(after["accuracy"]) >= 0.9


def test_rate_term_exactly_zero_after_switch_without_f_to():
    rc = RateControl(lmbda=100.0, f_from=0.5, switch_epoch=1)
    assert rc.target(0) == rc.target(1) == 0.5 and rc.target(2) is None and rc.term(torch.ones(3), 2) is None
    grads = {}
    for epoch, control in ((1, rc), (2, rc), (2, None)):
        torch.manual_seed(3)
        net = dense_decolle(20, (8,), 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the same weights every step, gradients compared
        rec = train_epoch(net, opt, toy_batches(4, n_batches=1), epoch, burn_in=5, rate_control=control, online=False)
        grads[(epoch, control is None)] = (rec["rate_term"], net.layers[0].base.weight.grad)
    assert grads[(1, False)][0][0] > 0
    assert grads[(2, False)][0] == [0.0]
    assert grads[(2, False)][1] is None and grads[(2, True)][1] is None  # zeroed after the batch step
    with_f_to = RateControl(lmbda=100.0, f_from=0.5, switch_epoch=1, f_to=0.1)
    assert with_f_to.target(2) == 0.1 and float(with_f_to.term(torch.ones(4), 2)) == pytest.approx(90.0)


def test_rate_term_changes_nothing_after_switch():
    """Training at an epoch after the switch gives the same weights with and without the control."""
    weights = []
    for control in (RateControl(100.0, 0.5, 0), None):
        torch.manual_seed(5)
        net = dense_decolle(20, (8,), 2)
        opt = torch.optim.Adamax(net.parameters(), lr=1e-2)
        train_epoch(net, opt, toy_batches(6, n_batches=2), 1, burn_in=5, rate_control=control)
        weights.append(net.layers[0].base.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"switch_epoch": -1}, "switch_epoch"),
        ({"switch_epoch": 1.5}, "switch_epoch"),
        ({"f_from": 1.5}, "f_from"),
        ({"lmbda": -1.0}, "lmbda"),
        ({"f_to": -0.1}, "f_to"),
    ],
)
def test_rate_control_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RateControl(**kwargs)


def test_conv_variant_and_bad_layers():
    torch.manual_seed(7)
    net = conv_decolle((2, 16, 16), (4, 6), 5, kernel=3, pooling=(2, 2))
    x = (torch.rand(10, 3, 2, 16, 16) < 0.2).float()
    states = net.init_state(x[0])
    spikes, readouts, _volts, _ = net.step(x[0], states)
    assert spikes[0].shape == (3, 4, 8, 8) and spikes[1].shape == (3, 6, 4, 4) and readouts[1].shape == (3, 5)
    res = evaluate(net, [(x, torch.tensor([0, 1, 2]))], burn_in=2)
    assert len(res["accuracy"]) == 2
    with pytest.raises(ValueError, match="pool"):
        DecolleLayer(nn.Linear(3, 4), (4,), 2, pool=2)
    with pytest.raises(ValueError, match="alpha"):
        DecolleLayer(nn.Linear(3, 4), (4,), 2, alpha=1.0)
    with pytest.raises(ValueError, match="burn_in"):
        train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.1), [(x, torch.tensor([0, 1, 2]))], 0, burn_in=10)
