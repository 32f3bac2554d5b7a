"""The spiking LSTM (issue 11): its gradients against finite differences (float64) and against an
independent straight-through loop, its spikes, its state, its bad input, and its place in the models."""

import pytest
import torch

import spikestab
from spikestab.models import SNNClassifier, SNNConfig, SNNLanguageModel
from spikestab.neurons.slstm import WIDTH_FACTOR, SLSTMState, matched_width, run_slstm, run_slstm_fused, tanh_spike
from spikestab.surrogate import SurrogateGradient
from spikestab.train.config import TrainConfig

D, S = 0.5, 1.5  # dampening, sharpness of the fast-sigmoid SG used below


def primitive(v):
    """Integral of the fast-sigmoid SG D / (1 + 2 S |v|)^2 from 0 to v (hand-derived)."""
    return D * v / (1 + 2 * S * v.abs())


def reference(x, layer):
    """The cell written out gate by gate, each step H as H(v) + P(v) - P(v).detach() (value H, gradient
    the SG), the tanh spike as -1 + 2 of that: an autograd reference independent of the layer's code."""
    H = layer.hidden_size
    w_ih, w_hh, b = layer.weight_ih, layer.weight_hh, layer.bias

    def step(v):
        return (v > 0).double() + (primitive(v) - primitive(v).detach())  # exactly H(v) in value

    h = torch.zeros(x.shape[1], H, dtype=torch.float64)
    c = torch.zeros_like(h)
    hs, cs, gates = [], [], []
    for t in range(x.shape[0]):
        pre = [
            x[t] @ w_ih[k * H : (k + 1) * H].t() + b[k * H : (k + 1) * H] + h @ w_hh[k * H : (k + 1) * H].t()
            for k in range(4)
        ]
        f, i, o = step(pre[0]), step(pre[1]), step(pre[2])
        c = f * c + i * (2 * step(pre[3]) - 1)
        h = o * (2 * step(c) - 1)
        hs.append(h)
        cs.append(c)
        gates.append(torch.stack([f, i, o]))
    return torch.stack(hs), torch.stack(cs), torch.stack(gates)


def _layer(seed=0, inputs=6, hidden=5):
    torch.manual_seed(seed)
    layer = spikestab.SLSTM(inputs, hidden, spike_fn=SurrogateGradient("fast-sigmoid", D, S)).double()
    with torch.no_grad():
        layer.bias.uniform_(-0.3, 0.3)
    return layer


def _spikes(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.3


def test_gradients_equal_finite_differences_float64():
    """With H replaced by the smooth 1/2 + P (whose exact derivative is the SG), the recurrence is
    differentiable: its autograd gradient w.r.t. the input projections, the recurrent weights and the
    initial state equals central finite differences (torch.autograd.gradcheck, float64)."""
    torch.manual_seed(1)
    T, B, H = 7, 2, 3
    wx = torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True)
    w_hh = (0.5 * torch.randn(4 * H, H, dtype=torch.float64)).requires_grad_()
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(B, H, dtype=torch.float64)

    def smooth(v):
        return 0.5 + primitive(v)

    def f(wx, w_hh, c0):
        h, c, _ = run_slstm(wx, w_hh, SLSTMState(h0, c0), smooth)
        return h, c

    assert torch.autograd.gradcheck(f, (wx, w_hh, c0), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_values_and_sg_gradients_equal_the_straight_through_reference():
    layer = _layer()
    x = _spikes((40, 3, 6)).double()
    h, c, _ = layer(x, return_voltage=True)
    hr, cr, _ = reference(x, layer)
    torch.testing.assert_close(h, hr.detach(), rtol=0, atol=0)
    torch.testing.assert_close(c, cr.detach(), rtol=0, atol=0)
    w = torch.randn_like(h)
    params = [layer.weight_ih, layer.weight_hh, layer.bias]
    g = torch.autograd.grad((h * w).sum() + 0.1 * (c * w).sum(), params)
    gr = torch.autograd.grad((hr * w).sum() + 0.1 * (cr * w).sum(), params)
    for a, b in zip(g, gr):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_tanh_spike_has_twice_the_sg():
    sg = SurrogateGradient("exponential", 0.7, 2.0)
    v = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    s = tanh_spike(v, sg)
    assert set(s.detach().unique().tolist()) == {-1.0, 1.0}
    (g,) = torch.autograd.grad(s.sum(), v)
    torch.testing.assert_close(g, 2 * 0.7 * torch.exp(-2 * (2.0 * v.detach()).abs()))


def test_spikes_are_binary_gates_and_signed_outputs():
    layer = _layer(seed=2)
    x = _spikes((60, 4, 6), seed=1).double()
    h, c, _ = layer(x, return_voltage=True)
    _, _, gates = reference(x, layer)
    assert set(gates.detach().unique().tolist()) == {0.0, 1.0}
    assert set(h.detach().unique().tolist()) == {-1.0, 0.0, 1.0}
    torch.testing.assert_close(h.abs(), gates[:, 2].detach())  # |h| is the output gate's spike
    # c adds +-1 or resets to 0 each step: integer valued, |c_t| <= t + 1
    assert torch.equal(c, c.round())
    assert (c.abs() <= torch.arange(1, 61, dtype=torch.float64)[:, None, None]).all()
    # what a stack records (rates, sparsity loss) is |h|: binary
    model = SNNClassifier(SNNConfig(6, 3, hidden_sizes=(5, 4), net="slstm", dropout=0.0))
    _, spikes, _ = model.run(x.float())
    assert all(set(z.unique().tolist()) <= {0.0, 1.0} for z in spikes)


def test_state_carries_over_between_calls():
    layer = _layer(seed=3)
    x = _spikes((30, 2, 6), seed=2).double()
    h, state = layer(x)
    h1, s1 = layer(x[:11])
    h2, s2 = layer(x[11:], s1)
    torch.testing.assert_close(torch.cat([h1, h2]), h)
    for a, b in zip(s2, state):
        torch.testing.assert_close(a, b)
    hb, _ = spikestab.SLSTM(6, 5, batch_first=True).double()(x.transpose(0, 1))
    assert hb.shape == (2, 30, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"input_size": 0, "hidden_size": 4},
            r"input_size must be a positive integer \(accepted range \[1, inf\)\), got 0",
        ),
        ({"input_size": 3, "hidden_size": 2.5}, r"hidden_size must be a positive integer"),
        (
            {"input_size": 3, "hidden_size": 4, "spike_fn": torch.sigmoid},
            r"spike_fn must be a spikestab.surrogate.SurrogateGradient",
        ),
        (
            {"input_size": 3, "hidden_size": 4, "spike_fn": SurrogateGradient(dampening=torch.ones(5))},
            r"spike_fn.dampening must be a scalar or have shape \(4,\) for a layer of 4 neurons, got shape \(5,\)",
        ),
    ],
)
def test_bad_construction_is_refused_with_the_accepted_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spikestab.SLSTM(**kwargs)


def test_bad_input_is_refused_and_spike_dtypes_converted():
    layer = spikestab.SLSTM(5, 4)
    with pytest.raises(ValueError, match=r"x must have rank 3 \(\[T, B, input_size\]\), got shape \(2, 5\)"):
        layer(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="x must have last dimension input_size=5, got 6"):
        layer(torch.zeros(3, 2, 6))
    with pytest.raises(ValueError, match=r"x has dtype torch.float16 but the layer computes in torch.float32"):
        layer(torch.zeros(3, 2, 5, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"state.c must have shape \(2, 4\), got \(2, 3\)"):
        layer(torch.zeros(3, 2, 5), SLSTMState(torch.zeros(2, 4), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got list"):
        layer([[0.0] * 5])
    x = _spikes((8, 2, 5))
    for dtype in (torch.bool, torch.uint8, torch.int64):
        assert torch.equal(layer(x.to(dtype))[0], layer(x.float())[0])


def test_width_factor_matches_the_lif_parameter_count_on_shd():
    assert WIDTH_FACTOR == pytest.approx(1 / 3) and matched_width(64) == 21 and matched_width(1) == 1
    with pytest.raises(ValueError, match="lif_width must be a positive integer"):
        matched_width(0)

    def count(net, width):
        m = SNNClassifier(SNNConfig(700, 20, hidden_sizes=(width, width), net=net))
        return sum(p.numel() for layer in m.stack.layers for p in layer.parameters() if p.requires_grad)

    lif, slstm = count("lif", 64), count("slstm", matched_width(64))
    assert (lif, slstm) == (57216, 64260)  # 64 (700 + 64 + 1) + 64 (64 + 64 + 1); 4 x 21 (700 + 21 + 1) + ...


def test_language_model_and_config_with_slstm():
    torch.manual_seed(0)
    lm = SNNLanguageModel(SNNConfig(6, 40, hidden_sizes=(7, 6), net="slstm"))
    tokens = torch.randint(0, 40, (12, 3))
    logits, states = lm(tokens)
    assert logits.shape == (12, 3, 40) and isinstance(states[0], SLSTMState)
    logits2, _ = lm(tokens, states)  # stateful across batches
    assert not torch.equal(logits, logits2)
    assert TrainConfig(net="slstm", conditions="none").net == "slstm"
    with pytest.raises(ValueError, match="net 'slstm' takes conditions 'none' and no init_rate"):
        TrainConfig(net="slstm")  # the default stabilize is the LIF recipe
    with pytest.raises(ValueError, match="net 'slstm' takes conditions 'none' and no init_rate"):
        TrainConfig(net="slstm", conditions="none", init_rate=0.5)


def test_trains_through_the_trainer(tmp_path):
    from spikestab.train.trainer import Trainer

    cfg = TrainConfig(
        task="randman",
        task_options={"n_units": 10, "n_steps": 20, "samples_per_class": 20, "n_classes": 3},
        net="slstm",
        layers="2x6",
        conditions="none",
        epochs=2,
        batch_size=16,
        lr=1e-2,
        out=str(tmp_path / "run"),
        progress=False,
        threads=1,
    )
    res = Trainer(cfg, log=lambda s: None).fit()
    assert res["epochs_done"] == 2 and 0.0 <= res["test"]["accuracy"] <= 1.0
    assert all(0.0 <= r <= 1.0 for r in res["test"]["rates"])
    res2 = Trainer(cfg, log=lambda s: None).fit(resume=True)  # the finished run reads back its checkpoint
    assert res2["test"] == res["test"]


@pytest.mark.parametrize("dampening", [0.7, torch.linspace(0.2, 1.0, 5)])
def test_the_fused_backward_equals_autograd_through_the_loop(dampening):
    """The layer's hand-written BPTT (``run_slstm_fused``) against autograd through ``run_slstm``: every
    output (h, c per step, the last state) and every input (projections, recurrent weights, h0, c0)."""
    torch.manual_seed(4)
    T, B, H = 25, 3, 5
    sg = SurrogateGradient("sigmoid", dampening, 1.3)
    wx = torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(4 * H, H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randint(-1, 2, (B, H)).double().requires_grad_()
    c0 = torch.randint(-2, 3, (B, H)).double().requires_grad_()
    weights = [torch.randn(T, B, H, dtype=torch.float64) for _ in range(2)] + [
        torch.randn(B, H, dtype=torch.float64) for _ in range(2)
    ]
    grads = []
    for run in (run_slstm, run_slstm_fused):
        h, c, st = run(wx, w_hh, SLSTMState(h0, c0), sg)
        outs = (h, c, st.h, st.c)
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        grads.append((outs, torch.autograd.grad(loss, (wx, w_hh, h0, c0))))
    (o1, g1), (o2, g2) = grads
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
