"""kernels.dropout: torch's dropout bit for bit (outputs, gradients, the generator's state after), and a
short training run with it ends on the weights of the same run with torch's nn.Dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikestab.kernels import dropout as kd
from spikestab.models import SNNConfig, build_model
from spikestab.neurons.dropout import Dropout

pytestmark = pytest.mark.skipif(
    not kd.reproduces_torch(), reason="this torch build draws its dropout masks otherwise (e.g. MKL on Intel)"
)


def spikes(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    """Mostly zeros (some of them -0.0), the rest spikes, counts and negative values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < density)
    x[torch.rand(shape, generator=g) < 0.1] = -0.0
    x[torch.rand(shape, generator=g) < density] = 1.0
    return x


def run(fn, x: torch.Tensor, p: float, drawn_before: int, grad: torch.Tensor | None):
    """fn(x, p) from a fixed generator state ``drawn_before`` draws into a seed: (output bits, generator
    state after, input-gradient bits or None)."""
    torch.manual_seed(7)
    torch.rand(drawn_before)
    xi = x.clone().requires_grad_(grad is not None)
    out = fn(xi, p)
    state = torch.get_rng_state()
    g = None if grad is None else torch.autograd.grad(out, xi, grad)[0].view(torch.int32)
    return out.detach().view(torch.int32), state, g


@pytest.mark.parametrize("shape", [(1,), (5, 3, 7), (40, 8, 33), (3, 1300)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.93])
@pytest.mark.parametrize("drawn_before", [0, 1, 623, 1250])
@pytest.mark.parametrize("with_grad", [False, True])
def test_equals_torch_dropout_bit_for_bit(shape, p, drawn_before, with_grad):
    x = spikes(shape, 0.05, seed=len(shape) + drawn_before)
    grad = torch.randn(shape) if with_grad else None
    assert kd.runs_exactly(x, p, True)
    want = run(lambda t, q: nn.functional.dropout(t, q, True), x, p, drawn_before, grad)
    got = run(kd.dropout, x, p, drawn_before, grad)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])  # the generator is where torch's dropout leaves it
    assert (got[2] is None and want[2] is None) or torch.equal(got[2], want[2])


def test_torch_where_the_c_pass_does_not_run():
    x = spikes((6, 4, 5), 0.3, seed=1)
    assert not kd.runs_exactly(x.transpose(0, 2), 0.2, True)  # not contiguous
    assert not kd.runs_exactly(x.double(), 0.2, True)
    assert not kd.runs_exactly(x, 0.2, False)
    assert kd.dropout(x, 0.2, training=False) is x
    assert kd.dropout(x, 0.0) is x
    want = run(lambda t, q: nn.functional.dropout(t, q, True), x.transpose(0, 2), 0.2, 3, None)
    assert torch.equal(run(kd.dropout, x.transpose(0, 2), 0.2, 3, None)[0], want[0])


def test_a_mismatch_with_torch_turns_the_c_pass_off(monkeypatch):
    """The once-per-process check compares with torch's own dropout: a different scale fails it."""
    monkeypatch.setattr(kd, "_scale", lambda p: 1.0 / (1.0 - p) + 1e-3)
    kd.reproduces_torch.cache_clear()
    try:
        assert not kd.reproduces_torch()
        assert not kd.runs_exactly(torch.ones(4), 0.5, True)
    finally:
        monkeypatch.undo()
        kd.reproduces_torch.cache_clear()
    assert kd.reproduces_torch()


def train(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """A few AdamW steps of the per-step cross-entropy from seed 3 (dropout masks drawn as they come)."""
    torch.manual_seed(3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for x, y in batches:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(logits.shape[0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("net", ["lif", "alif"])
def test_training_ends_on_the_weights_of_torchs_dropout(net):
    cfg = SNNConfig(input_size=30, output_size=4, hidden_sizes=(16, 12), net=net, dropout=0.3)
    batches = [(spikes((25, 8, 30), 0.1, seed=s).abs(), torch.randint(0, 4, (8,))) for s in range(4)]
    torch.manual_seed(0)
    fast = build_model(cfg, "classification")
    assert isinstance(fast.stack.dropout, Dropout)
    plain = build_model(cfg, "classification")
    plain.load_state_dict(fast.state_dict())
    plain.stack.dropout = nn.Dropout(cfg.dropout)  # the plain reference path
    start = {k: v.clone() for k, v in fast.state_dict().items()}
    want, got = train(plain, batches), train(fast, batches)
    for name, w in want.items():
        assert torch.equal(got[name].view(torch.int32), w.view(torch.int32)), name
    assert not torch.equal(got["readout.weight"], start["readout.weight"])  # it trained
