"""``stabilize`` on snnTorch, Norse and SpikingJelly networks (spikestab.adapters, stability.peer): the
recipe's targets are hit on the peer's own forward pass (rates counted from the spikes the user's model
returns, BPTT growth from perturbations written into the user's own loop), the choices live in the
libraries' own parameters, the model keeps its state_dict keys and deep-copies, and bad input is refused
with the model left exactly as it was."""

from __future__ import annotations

import copy
import math

import norse.torch as norse
import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import layer as sj_layer
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

from spikestab.adapters import PeerSurrogate, find_peer_neurons
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.stability import stabilize
from spikestab.stability.drive import GROWTH_RATIO
from spikestab.stability.measure import growth_from_norms
from spikestab.stability.regime import SPARSE_GROWTH_RATIO, SPARSE_RATE
from spikestab.surrogate import SurrogateGradient

pytestmark = pytest.mark.usefixtures("one_thread")

T, B, N_IN, H = 60, 16, 30, 32
SOLVE = 8  # stabilize's default solve_batch: D and G are solved on the first 8 samples


class Perturb:
    """The reference: zero tensors added in the user's own loop to one layer's state at every step."""

    def __init__(self, layer: int) -> None:
        self.layer, self.es = layer, []

    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if layer != self.layer:
            return x
        e = torch.zeros_like(x, requires_grad=True)
        self.es.append(e)
        return x + e


def nothing(layer: int, x: torch.Tensor) -> torch.Tensor:
    return x


class SnnTorchRecurrent(nn.Module):
    """snnTorch's tutorial style: RLeaky layers in a Python time loop (or Leaky for feed_forward)."""

    def __init__(self, feed_forward: bool = False, synaptic: bool = False) -> None:
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(N_IN, H), nn.Linear(H, H)])
        if synaptic:
            make = (
                (lambda: snn.Synaptic(alpha=0.8, beta=0.9))
                if feed_forward
                else (lambda: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=H))
            )
        else:
            make = (
                (lambda: snn.Leaky(beta=0.95)) if feed_forward else (lambda: snn.RLeaky(beta=0.95, linear_features=H))
            )
        self.lifs = nn.ModuleList([make(), make()])
        self.out = nn.Linear(H, 5)

    def forward(self, x, perturb=nothing):
        recurrent = isinstance(self.lifs[0], (snn.RLeaky, snn.RSynaptic))
        init = {
            snn.Leaky: "init_leaky",
            snn.RLeaky: "init_rleaky",
            snn.Synaptic: "init_synaptic",
            snn.RSynaptic: "init_rsynaptic",
        }
        states = []
        for lif in self.lifs:
            st = getattr(lif, init[type(lif)])()
            states.append(st if isinstance(st, tuple) else (st,))
        spikes, logits = [[], []], []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                out = lif(perturb(i, fc(h)), *states[i])
                h, states[i] = out[0], (out if recurrent else out[1:])
                spikes[i].append(h)
            logits.append(self.out(h))
        self.voltages = [lif.mem for lif in self.lifs] if perturb is not nothing else None
        return torch.stack(logits), [torch.stack(s) for s in spikes]


class NorseCells(nn.Module):
    """Norse cells in a loop with explicit state; ``recurrent`` picks LIFRecurrentCell, ``adaptive``
    LSNNRecurrentCell."""

    def __init__(self, recurrent: bool = True, adaptive: bool = False) -> None:
        super().__init__()
        if adaptive:
            self.cells = nn.ModuleList([norse.LSNNRecurrentCell(N_IN, H), norse.LSNNRecurrentCell(H, H)])
        elif recurrent:
            self.cells = nn.ModuleList([norse.LIFRecurrentCell(N_IN, H), norse.LIFRecurrentCell(H, H)])
        else:
            self.fcs = nn.ModuleList([nn.Linear(N_IN, H), nn.Linear(H, H)])
            self.cells = nn.ModuleList([norse.LIFCell(), norse.LIFCell()])
        self.out = nn.Linear(H, 5)

    def forward(self, x, perturb=nothing):
        states = [None, None]
        spikes, logits = [[], []], []
        for t in range(x.shape[0]):
            h = x[t]
            for i, cell in enumerate(self.cells):
                if states[i] is None:
                    cur = self.fcs[i](h) if hasattr(self, "fcs") else h
                    states[i] = cell.state_fallback(cur)
                states[i] = states[i]._replace(v=perturb(i, states[i].v))
                h, states[i] = cell(self.fcs[i](h) if hasattr(self, "fcs") else h, states[i])
                spikes[i].append(h)
            logits.append(self.out(h))
        self.voltages = [s.v for s in states] if perturb is not nothing else None
        return torch.stack(logits), [torch.stack(s) for s in spikes]


class NorseSequence(nn.Module):
    """Norse's multi-step modules (LIFRecurrent, LSNNRecurrent, or LIF after a Linear)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "lif":
            self.fc = nn.Linear(N_IN, H)
            self.layers = nn.ModuleList([norse.LIF(), norse.LIFRecurrent(H, H)])
        else:
            make = norse.LSNNRecurrent if kind == "lsnn" else norse.LIFRecurrent
            self.layers = nn.ModuleList([make(N_IN, H), make(H, H)])
        self.out = nn.Linear(H, 5)

    def forward(self, x, perturb=None):
        h = self.fc(x) if hasattr(self, "fc") else x
        spikes = []
        for lif in self.layers:
            h, _ = lif(h)
            spikes.append(h)
        return self.out(h), spikes


class SpikingJellyNet(nn.Module):
    """SpikingJelly: Linear + LinearRecurrentContainer(LIFNode) in single-step mode, the user's own loop
    with a Linear on the previous spikes, or multi-step LIFNodes (feed-forward)."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.fcs = nn.ModuleList([nn.Linear(N_IN, H), nn.Linear(H, H)])
        mode = "m" if style == "multistep" else "s"
        nodes = [sj_neuron.LIFNode(tau=10.0, v_reset=None, detach_reset=True, step_mode=mode) for _ in range(2)]
        if style == "container":
            self.layers = nn.ModuleList([sj_layer.LinearRecurrentContainer(n, H, H) for n in nodes])
        else:
            self.layers = nn.ModuleList(nodes)
            self.recs = nn.ModuleList([nn.Linear(H, H, bias=False), nn.Linear(H, H, bias=False)])
        self.out = nn.Linear(H, 5)

    def nodes(self):
        return [m for m in self.modules() if isinstance(m, sj_neuron.LIFNode)]

    def forward(self, x, perturb=nothing):
        sj_functional.reset_net(self)
        if self.style == "multistep":
            h, spikes = x, []
            for i, (fc, node) in enumerate(zip(self.fcs, self.layers)):
                h = node(perturb(i, fc(h)))
                spikes.append(h)
            self.voltages = [n.v for n in self.nodes()] if perturb is not nothing else None
            return self.out(h), spikes
        prev = [torch.zeros(x.shape[1], H), torch.zeros(x.shape[1], H)]
        spikes, logits = [[], []], []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (fc, lay) in enumerate(zip(self.fcs, self.layers)):
                cur = fc(h) if self.style == "container" else fc(h) + self.recs[i](prev[i])
                h = lay(perturb(i, cur)) if self.style != "container" else lay(cur)
                prev[i] = h
                spikes[i].append(h)
            logits.append(self.out(h))
        self.voltages = [n.v for n in self.nodes()] if perturb is not nothing else None
        return torch.stack(logits), [torch.stack(s) for s in spikes]


class Logits(nn.Module):
    """The network seen by stabilize: only the logits (what a user's training loop takes)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0]


# name -> (builder, whether its loop takes the reference perturbation, recurrent)
NETS = {
    "snntorch-rleaky": (lambda: SnnTorchRecurrent(), True, True),
    "snntorch-leaky": (lambda: SnnTorchRecurrent(feed_forward=True), True, False),
    "snntorch-rsynaptic": (lambda: SnnTorchRecurrent(synaptic=True), True, True),
    "norse-lifrecurrentcell": (lambda: NorseCells(), True, True),
    "norse-lifcell": (lambda: NorseCells(recurrent=False), True, False),
    "norse-lsnnrecurrentcell": (lambda: NorseCells(adaptive=True), True, True),
    "norse-lifrecurrent": (lambda: NorseSequence("lifrec"), False, True),
    "norse-lsnnrecurrent": (lambda: NorseSequence("lsnn"), False, True),
    "norse-lif": (lambda: NorseSequence("lif"), False, True),
    "spikingjelly-container": (lambda: SpikingJellyNet("container"), False, True),
    "spikingjelly-own-loop": (lambda: SpikingJellyNet("loop"), True, True),
    "spikingjelly-multistep": (lambda: SpikingJellyNet("multistep"), True, False),
}


def data(seed: int = 0, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, batch, N_IN, generator=g) < 0.2).float()


def reference_growth(net: nn.Module, x: torch.Tensor, layer: int) -> float:
    """The BPTT growth per step of ``layer`` measured in the user's own loop: L = <u, v_{T-1}> (u as
    stabilize draws it), gradients with respect to the perturbations the loop added."""
    perturb = Perturb(layer)
    net.eval()
    with torch.enable_grad():
        net(x, perturb)
        v = net.voltages[layer]
        u = torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad((v * u).sum(), perturb.es, allow_unused=True)
    if len(grads) == 1:  # one multi-step call: a perturbation per step along its first axis
        grads = tuple(grads[0].unbind(0))
    norms = torch.stack([g.double().norm() if g is not None else torch.zeros((), dtype=torch.float64) for g in grads])
    return growth_from_norms(norms)["growth_per_step"]


@pytest.mark.parametrize("name", sorted(NETS))
def test_recipe_targets_are_hit_on_the_peer_forward(name):
    """Forced sparse start (rate 0.03, reachable for every net but Norse's LSNN): D's rate counted from the
    spikes the user's model returns, G's growth from the user's own loop, both on the solve batch, within
    D's and G's own tolerances (0.01 and 2e-3, as on spikestab layers)."""
    build, has_loop_reference, recurrent = NETS[name]
    torch.manual_seed(0)
    net = build()
    x = data()
    report = stabilize(Logits(net), x, regime="sparse")
    assert [lr.name for lr in report.layers] == [n.name for n in find_peer_neurons(Logits(net))]
    net.eval()
    with torch.no_grad():
        _, spikes = net(x[:, :SOLVE])
        _, spikes_all = net(x)
    for i, lr in enumerate(report.layers):
        d = lr.condition("D")
        rate = float(spikes[i].float().mean())
        # the report's rate (whole batch) is the one the user's model gives
        assert float(spikes_all[i].float().mean()) == pytest.approx(d.measured, abs=1e-6), (name, i)
        if d.feasible:
            assert abs(rate - SPARSE_RATE) <= 0.01, (name, i)
        else:  # Norse's LSNN: a threshold that jumps by 1.8 per spike caps the rate near 2 % here
            assert "lsnn" in name and "not reachable" in d.note and rate > 0, (name, i, d.note)
        g = lr.condition("G")
        target = g.target
        if g.fallback and "does not depend" in g.fallback:
            assert not recurrent, (name, i)
            continue
        assert g.feasible, (name, i, g.note)
        if has_loop_reference:
            assert abs(reference_growth(net, x[:, :SOLVE], i) - target) <= 2e-3 + 1e-6, (name, i)


@pytest.mark.parametrize("regime, ratio", [("dense", GROWTH_RATIO), ("sparse", SPARSE_GROWTH_RATIO)])
def test_g_target_is_the_ratio_times_the_leaks_own_decay(regime, ratio):
    """G's target is measured as the growth at the smallest dampening: for one decay beta (snnTorch's RLeaky,
    whose reset is detached) that is log(beta) in closed form; D aims at the regime's rate."""
    torch.manual_seed(1)
    net = SnnTorchRecurrent()
    x = (torch.rand(T, B, N_IN) < 0.5).float()
    report = stabilize(Logits(net), x, regime=regime)
    assert report.regime["regime"] == regime
    for lr in report.layers:
        assert lr.condition("D").target == (0.5 if regime == "dense" else SPARSE_RATE)
        g = lr.condition("G")
        assert g.extra["leak_growth"] == pytest.approx(math.log(0.95), abs=1e-4)
        assert g.target == pytest.approx(ratio * g.extra["leak_growth"])


def test_regime_is_measured_on_the_first_peer_layer_with_a_probe():
    torch.manual_seed(0)
    net = Logits(SnnTorchRecurrent())
    probe_x = data(1, batch=96)
    labels = torch.arange(96) % 4
    report = stabilize(net, data(), probe=(probe_x, labels))
    assert report.regime["measured"] is True
    assert report.regime["regime"] in ("dense", "sparse")
    assert len(report.regime["scan"]) >= 5


def test_choices_live_in_the_libraries_own_parameters():
    torch.manual_seed(0)
    nets = {"snntorch": SnnTorchRecurrent(), "norse": NorseCells(), "spikingjelly": SpikingJellyNet("loop")}
    for lib, net in nets.items():
        report = stabilize(Logits(net), data(), regime="sparse")
        for n, lr in zip(find_peer_neurons(net), report.layers):
            assert float(n.threshold().mean()) == pytest.approx(lr.condition("D").chosen_mean, rel=1e-6), lib
            sg = n.surrogate()
            assert sg is not None
            assert float(sg.dampening) == pytest.approx(lr.condition("G").chosen_mean, rel=1e-6), lib
            assert any("G installed" in note for note in lr.notes), lib


@pytest.mark.parametrize("lib", ["snntorch", "norse", "spikingjelly"])
def test_install_uses_the_library_sg_where_it_can_express_the_choice(lib):
    """An expressible SG goes in as the library's own object, another as PeerSurrogate; either way the
    module's SG derivative is spikestab's."""
    net = {"snntorch": SnnTorchRecurrent(), "norse": NorseCells(), "spikingjelly": SpikingJellyNet("loop")}[lib]
    n = find_peer_neurons(net)[0]
    native = {
        "snntorch": SurrogateGradient("arctan", 2.0, 2.0),
        "norse": SurrogateGradient("triangular", 0.4, 1.0),
        "spikingjelly": SurrogateGradient("sigmoid", 1.5, 1.5),
    }[lib]
    other = SurrogateGradient("exponential", 0.3, 2.0)
    v = torch.linspace(-3, 3, 101)
    for sg, expect_peer in ((native, False), (other, True)):
        n.install(sg)
        slot = {
            "snntorch": lambda: n.module.spike_grad,
            "norse": lambda: n.module.p.method,
            "spikingjelly": lambda: n.module.surrogate_function,
        }[lib]()
        assert isinstance(slot, PeerSurrogate) == expect_peer, (lib, sg)
        x = v.clone().requires_grad_(True)
        if lib == "norse":
            from norse.torch.functional.lif import threshold

            out = threshold(x, n.module.p.method, n.module.p.alpha)
        else:
            out = slot(x)
        (g,) = torch.autograd.grad(out.sum(), x)
        torch.testing.assert_close(g, sg.derivative(v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["snntorch-rleaky", "norse-lifrecurrentcell", "spikingjelly-own-loop"])
def test_state_dict_deepcopy_and_training_in_the_users_loop(name):
    torch.manual_seed(0)
    net = NETS[name][0]()
    keys = set(net.state_dict())
    stabilize(Logits(net), data(), regime="sparse")
    assert set(net.state_dict()) == keys  # the installed SG adds no entries
    twin = copy.deepcopy(net)
    fresh = NETS[name][0]()
    fresh.load_state_dict(net.state_dict())  # strict: the same keys
    x = data(2)
    net.train()
    twin.train()
    out, _ = net(x)
    out2, _ = twin(x)
    torch.testing.assert_close(out, out2)
    names = [n for n, _ in net.named_parameters()]
    g1 = torch.autograd.grad(out.sum(), list(net.parameters()), allow_unused=True)
    g2 = torch.autograd.grad(out2.sum(), list(twin.parameters()), allow_unused=True)
    for name_, a, b in zip(names, g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            if name_.endswith("recurrent_weights"):  # Norse zeroes the self-connections' gradient with a tensor
                a, b = a.fill_diagonal_(0), b.fill_diagonal_(0)  # hook that deepcopy drops (Norse's own limit)
            torch.testing.assert_close(a, b)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    y = torch.arange(B) % 5
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x)[0].mean(0), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def _frozen(net: nn.Module):
    """Everything stabilize may change: the state_dict, the thresholds (also those outside it) and the SG
    objects in the libraries' slots."""
    peers = find_peer_neurons(net)
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [n.threshold().clone() for n in peers],
        [getattr(n.module, attr, None) for n in peers for attr in ("spike_grad", "surrogate_function", "p")],
    )


def _same(net: nn.Module, before) -> None:
    state, thresholds, slots = before
    now = _frozen(net)
    assert state.keys() == now[0].keys()
    for k in state:
        assert torch.equal(state[k], now[0][k]), k
    assert all(torch.equal(a, b) for a, b in zip(thresholds, now[1]))
    assert all(a is b for a, b in zip(slots, now[2]))


def test_bad_input_is_refused_naming_it_and_the_model_is_unchanged():
    torch.manual_seed(0)
    net = Logits(SnnTorchRecurrent())
    before = _frozen(net)
    with pytest.raises(ValueError, match="batch could not be run"):
        stabilize(net, torch.rand(T, B, N_IN + 1))
    with pytest.raises(ValueError, match="batch could not be run"):
        stabilize(net, torch.ones(T, B, N_IN, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch is on meta"):
        stabilize(net, torch.rand(T, B, N_IN, device="meta"))
    with pytest.raises(ValueError, match="batch must be a tensor"):
        stabilize(net, [torch.rand(B, N_IN)] * T)
    with pytest.raises(ValueError, match="batch_dim must be 0"):
        stabilize(net, data(), batch_dim=2)
    with pytest.raises(ValueError, match="finite"):
        stabilize(net, torch.full((T, B, N_IN), float("nan")))
    with pytest.raises(ValueError, match="conditions I-IV need spikestab layers"):
        stabilize(net, data(), conditions=("I", "II"))
    with pytest.raises(ValueError, match="probe labels"):
        stabilize(net, data(), probe=(data(1, 96), torch.rand(96)))
    _same(net, before)


def test_unknown_neurons_no_neurons_and_mixed_models_are_refused():
    alpha = nn.Sequential(nn.Linear(N_IN, H), snn.Alpha(alpha=0.9, beta=0.8))
    with pytest.raises(ValueError, match=r"1 \(snntorch.Alpha\).*supported"):
        stabilize(alpha, data())
    with pytest.raises(ValueError, match=r"\(spikingjelly.IFNode\)"):
        stabilize(nn.Sequential(nn.Linear(N_IN, H), sj_neuron.IFNode(step_mode="m")), data())
    with pytest.raises(ValueError, match="at least one spiking layer"):
        stabilize(nn.Sequential(nn.Linear(N_IN, H)), data())
    mixed = nn.ModuleDict({"ours": SNNClassifier(SNNConfig(N_IN, 5, hidden_sizes=(8,))), "theirs": snn.Leaky(0.9)})
    with pytest.raises(ValueError, match="mixes spikestab spiking layers"):
        stabilize(mixed, data())


def test_a_failure_midway_leaves_the_model_exactly_as_it_was():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.calls = SnnTorchRecurrent(), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 30:  # well into condition D's threshold search on the second layer
                raise RuntimeError("disk on fire")
            return self.net(x)[0]

    torch.manual_seed(0)
    model = Fails()
    before = _frozen(model)
    with pytest.raises(RuntimeError, match="disk on fire"):
        stabilize(model, data(), regime="sparse")
    _same(model, before)


def test_a_stabilised_model_pickles_with_its_installed_sg():
    """A PeerSurrogate pickles (with the model, e.g. for multiprocessing) and keeps its derivative."""
    import pickle

    torch.manual_seed(0)
    net = SpikingJellyNet("loop")
    stabilize(Logits(net), data(), regime="sparse")
    twin = pickle.loads(pickle.dumps(net))
    slot = twin.nodes()[0].surrogate_function
    assert isinstance(slot, PeerSurrogate)
    v = torch.linspace(-2, 2, 41)
    torch.testing.assert_close(slot.sg.derivative(v), net.nodes()[0].surrogate_function.sg.derivative(v))
    x = data(3)
    net.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], twin(x)[0])


@pytest.mark.parametrize("name", ["snntorch-rleaky", "norse-lifrecurrentcell", "spikingjelly-container"])
def test_a_saved_report_and_state_dict_rebuild_the_stabilised_model(name, tmp_path):
    """apply_report on a fresh copy (from the report's JSON) plus load_state_dict gives the same network:
    the same thresholds, SGs and outputs."""
    import json

    from spikestab.stability import apply_report

    torch.manual_seed(0)
    net = NETS[name][0]()
    report = stabilize(Logits(net), data(), regime="sparse")
    (tmp_path / "report.json").write_text(json.dumps(report.to_dict()))
    fresh = NETS[name][0]()
    apply_report(Logits(fresh), json.loads((tmp_path / "report.json").read_text()))
    fresh.load_state_dict(net.state_dict())
    for a, b in zip(find_peer_neurons(net), find_peer_neurons(fresh)):
        assert torch.equal(a.threshold(), b.threshold())
        sa, sb = a.surrogate(), b.surrogate()
        assert (sa.shape, float(sa.dampening), float(sa.sharpness)) == (
            sb.shape,
            float(sb.dampening),
            float(sb.sharpness),
        )
    x = data(4)
    net.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], fresh(x)[0])
    with pytest.raises(ValueError, match="not in the model"):
        apply_report(nn.Sequential(snn.Leaky(0.9)), report)


def test_batch_first_input_gives_the_same_regime_measurements():
    """batch_dim=0 with [B, T, N] input: the probe's input counts are counted over time as for [T, B, N]
    (they were the flattened raster, so the timing-code clause could not fire)."""

    class BatchFirst(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.transpose(0, 1))

    torch.manual_seed(0)
    net = Logits(SnnTorchRecurrent())
    probe_x, labels = data(1, batch=96), torch.arange(96) % 4
    first = stabilize(copy.deepcopy(net), data(), probe=(probe_x, labels)).regime
    second = stabilize(
        BatchFirst(copy.deepcopy(net)), data().transpose(0, 1), probe=(probe_x.transpose(0, 1), labels), batch_dim=0
    ).regime
    assert second["input_readability"] == pytest.approx(first["input_readability"])
    assert second["regime"] == first["regime"]
