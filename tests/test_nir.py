"""NIR export/import (spikestab.nir): exact round trips, the dt mapping, an independent reader, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from spikestab import ALIF, LIF, LIFCell, SNNClassifier, SNNConfig, SNNLanguageModel
from spikestab.models import SpikingStack
from spikestab.surrogate import SurrogateGradient

nir = pytest.importorskip("nir")
from spikestab.nir import export_nir, import_nir  # noqa: E402

EXACT = [("lif", "subtract"), ("lif", "multiplicative"), ("lif", "none"), ("alif", "none")]
INEXACT = [
    ("lif", "multiplicative_all"),
    ("alif", "subtract"),
    ("alif", "multiplicative"),
    ("alif", "multiplicative_all"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _heterogeneous(model: torch.nn.Module, shape: str = "fast-sigmoid", tail: float | None = None) -> torch.nn.Module:
    """Per-neuron tau, threshold, SG dampening/sharpness and (ALIF) rho/beta on every layer."""
    g = torch.Generator().manual_seed(1)
    layers = model.stack.layers if isinstance(model, SNNClassifier) else [model]
    for layer in layers:
        h = layer.hidden_size
        with torch.no_grad():
            layer.tau.copy_(2.0 + 40.0 * torch.rand(h, generator=g))
            layer.threshold.copy_(0.2 + 0.6 * torch.rand(h, generator=g))
            if isinstance(layer.bias, torch.nn.Parameter):
                layer.bias.copy_(0.1 * torch.randn(h, generator=g))
            if layer.adaptive:
                layer.rho.copy_(torch.exp(-1.0 / (20.0 + 200.0 * torch.rand(h, generator=g))))
                layer.beta_adapt.copy_(2.0 * torch.rand(h, generator=g))
        layer.spike_fn = SurrogateGradient(
            shape, 0.2 + torch.rand(h, generator=g), 0.5 + torch.rand(h, generator=g), tail
        )
    return model


def _classifier(net: str, reset: str, recurrent: bool = True, **kw) -> SNNClassifier:
    cfg = SNNConfig(
        input_size=7, output_size=3, hidden_sizes=(9, 6), net=net, reset=reset, recurrent=recurrent, dropout=0.0, **kw
    )
    return _heterogeneous(SNNClassifier(cfg)).eval()


def _spikes(t: int = 30, b: int = 3, n: int = 7, p: float = 0.4) -> torch.Tensor:
    return (torch.rand(t, b, n) < p).float()


def _assert_same_run(a: SNNClassifier, b: SNNClassifier, x: torch.Tensor) -> None:
    la, sa, va = a.run(x, record_voltage=True)
    lb, sb, vb = b.run(x, record_voltage=True)
    assert 0.02 < sa[0].mean().item() < 0.9, "the test input must make the first layer spike sometimes"
    assert all(torch.equal(p, q) for p, q in zip(sa, sb))
    assert all(torch.equal(p, q) for p, q in zip(va, vb))
    assert torch.equal(la, lb)


def _through_file(graph, tmp_path):
    path = tmp_path / "model.nir"
    nir.write(path, graph)
    return nir.read(path)


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("net,reset", EXACT + INEXACT)
def test_round_trip_is_exact_through_an_hdf5_file(net, reset, recurrent, tmp_path):
    model = _classifier(net, reset, recurrent)
    exact = (net, reset) in EXACT
    graph = export_nir(model, strict=exact)
    assert bool(graph.metadata["nir_exact"]) is exact
    back = import_nir(_through_file(graph, tmp_path))
    assert isinstance(back, SNNClassifier)
    _assert_same_run(model, back, _spikes())
    for old, new in zip(model.stack.layers, back.stack.layers):
        assert type(new) is type(old) and new.reset == old.reset and new.recurrent == old.recurrent
        assert torch.equal(new.tau, old.tau) and torch.equal(new.threshold, old.threshold)
        assert torch.equal(new.spike_fn.dampening, old.spike_fn.dampening)
        assert torch.equal(new.spike_fn.sharpness, old.spike_fn.sharpness)
        if old.adaptive:
            assert torch.equal(new.rho, old.rho) and torch.equal(new.beta_adapt, old.beta_adapt)
    assert back.config.to_dict() == model.config.to_dict()


def test_gradients_and_training_flags_survive_the_round_trip():
    cfg = SNNConfig(
        input_size=7,
        output_size=3,
        hidden_sizes=(8,),
        net="lif",
        reset="subtract",
        dropout=0.0,
        learn_tau=True,
        learn_threshold=True,
        detach_reset=False,
        surrogate="q-pseudospike",
        tail=2.5,
    )
    model = _heterogeneous(SNNClassifier(cfg), "q-pseudospike", 2.5).eval()
    model.stack.layers[0].spike_fn = model.stack.layers[0].spike_fn.with_params()
    back = import_nir(export_nir(model))
    layer, new = model.stack.layers[0], back.stack.layers[0]
    assert new.tau.requires_grad and new.threshold.requires_grad and new.detach_reset is False
    assert new.spike_fn.shape == "q-pseudospike" and new.spike_fn.tail == 2.5
    x = _spikes()
    model(x).square().sum().backward()
    back(x).square().sum().backward()
    for name in ("weight_ih", "weight_hh", "tau", "threshold", "bias"):
        torch.testing.assert_close(getattr(new, name).grad, getattr(layer, name).grad, rtol=1e-5, atol=1e-6)


def test_strict_export_names_the_layer_and_reset_nir_cannot_express():
    with pytest.raises(ValueError, match=r"layer 0 \(ALIF, reset='subtract'\).*strict=False"):
        export_nir(_classifier("alif", "subtract"))
    with pytest.raises(ValueError, match="multiplicative_all"):
        export_nir(_classifier("lif", "multiplicative_all"))


@pytest.mark.parametrize("dt", [1.0, 0.5, 1e-3])
def test_mapping_one_euler_step_is_one_spikestab_step(dt):
    layer = ALIF(
        4,
        5,
        recurrent=False,
        tau=torch.tensor([2.0, 5.0, 20.0, 100.0, 1000.0]),
        reset="none",
        tau_adapt=torch.tensor([50.0, 100.0, 200.0, 400.0, 800.0]),
    )
    graph = export_nir(layer, dt=dt)
    v, thr = graph.nodes["layer0_membrane"], graph.nodes["layer0_spikes"]
    alpha = layer.alpha.double().numpy()
    assert isinstance(v, nir.LI) and isinstance(thr, nir.Threshold)
    np.testing.assert_allclose(v.tau, dt / (1.0 - alpha), rtol=1e-6)  # tau_NIR = dt / (1 - alpha)
    np.testing.assert_allclose(v.r, v.tau / dt, rtol=1e-6)  # r = tau_NIR / dt
    np.testing.assert_allclose(1.0 - dt / v.tau, alpha, rtol=1e-6)  # Euler decay = alpha
    np.testing.assert_allclose(dt * v.r / v.tau, 1.0, rtol=1e-6)  # the input enters once
    np.testing.assert_allclose(v.tau, layer.tau.numpy() * dt + dt / 2, rtol=2e-2)  # ~ tau_steps * dt + dt/2
    assert not np.any(v.v_leak)
    a, scale = graph.nodes["layer0_adapt"], graph.nodes["layer0_adapt_scale"]
    np.testing.assert_allclose(1.0 - dt / a.tau, layer.rho.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.r, 1.0)
    np.testing.assert_array_equal(scale.scale, -layer.beta_adapt.numpy())
    assert graph.metadata["dt"] == dt
    back = import_nir(graph)  # dt comes from the metadata
    assert torch.equal(back.tau, layer.tau) and torch.equal(back.rho, layer.rho)


def test_graph_structure_of_a_recurrent_subtract_layer():
    model = _classifier("lif", "subtract")
    graph = export_nir(model)
    layer = model.stack.layers[0]
    assert ("layer0_spikes", "layer0_rec") in graph.edges and ("layer0_rec", "layer0_membrane") in graph.edges
    assert ("layer0_spikes", "layer0_reset") in graph.edges and ("layer0_reset", "layer0_membrane") in graph.edges
    np.testing.assert_array_equal(graph.nodes["layer0_rec"].weight, layer.recurrent_weight().detach().numpy())
    np.testing.assert_array_equal(graph.nodes["layer0_reset"].weight, np.diag(-layer.threshold.detach().numpy()))
    np.testing.assert_array_equal(graph.nodes["readout"].weight, model.readout.weight.detach().numpy())
    meta = graph.nodes["layer0_spikes"].metadata
    assert meta["surrogate"] == "fast-sigmoid" and meta["reset"] == "subtract"
    np.testing.assert_array_equal(meta["dampening"], layer.spike_fn.dampening.numpy())


# --- an independent reader: nirtorch runs the graph with NIR's own equations (forward Euler) -------------


def _nir_modules(dt: float) -> dict:
    class Leaky(torch.nn.Module):
        def __init__(self, node, spiking: bool) -> None:
            super().__init__()
            self.step = torch.tensor(dt / node.tau, dtype=torch.float32)
            self.r, self.leak = torch.tensor(node.r), torch.tensor(node.v_leak)
            self.spiking = spiking
            if spiking:
                self.thr, self.v_reset = torch.tensor(node.v_threshold), torch.tensor(node.v_reset)

        def forward(self, x, state=None):  # tau dv/dt = (v_leak - v) + r I, one Euler step of dt
            v = torch.zeros_like(x) if state is None else state
            v = v + self.step * (self.leak - v + self.r * x)
            if not self.spiking:
                return v, v
            z = (v > self.thr).float()
            return z, torch.where(z > 0, self.v_reset, v)

    class Heaviside(torch.nn.Module):
        def __init__(self, node) -> None:
            super().__init__()
            self.thr = torch.tensor(node.threshold)

        def forward(self, x):
            return (x > self.thr).float()

    class Scale(torch.nn.Module):
        def __init__(self, node) -> None:
            super().__init__()
            self.scale = torch.tensor(node.scale)

        def forward(self, x):
            return x * self.scale

    def affine(node):
        module = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
        module.weight.data, module.bias.data = torch.tensor(node.weight), torch.tensor(node.bias)
        return module

    return {
        nir.LI: lambda n: Leaky(n, False),
        nir.LIF: lambda n: Leaky(n, True),
        nir.Threshold: Heaviside,
        nir.Scale: Scale,
        nir.Affine: affine,
    }


def _nirtorch_run(graph, x: torch.Tensor, dt: float) -> torch.Tensor:
    nirtorch = pytest.importorskip("nirtorch")
    module = nirtorch.nir_to_torch(graph, _nir_modules(dt))
    state, out = None, []
    for t in range(x.shape[0]):
        y, state = module(x[t], state)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("net,reset", EXACT)
def test_nirtorch_simulates_the_exported_file_like_spikestab(net, reset, recurrent, tmp_path):
    model = _classifier(net, reset, recurrent)
    dt = 0.5 if recurrent else 1.0
    x = _spikes()
    logits, spikes, _ = model.run(x)
    assert 0.02 < spikes[-1].mean().item() < 0.9
    theirs = _nirtorch_run(_through_file(export_nir(model, dt=dt), tmp_path), x, dt)
    torch.testing.assert_close(theirs, logits, rtol=1e-5, atol=1e-5)


def test_inexact_export_is_what_nirtorch_sees_and_differs():
    model = _classifier("alif", "subtract")
    x = _spikes()
    theirs = _nirtorch_run(export_nir(model, strict=False), x, 1.0)
    assert theirs.shape == model(x).shape and not torch.allclose(theirs, model(x))


# --- graphs spikestab did not write ------------------------------------------------------------------------


def _rng_graph_parts(seed: int = 3, n_in: int = 6, h: int = 8):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.6, (h, n_in)).astype(np.float32)
    b = rng.normal(0.0, 0.1, h).astype(np.float32)
    m = rng.normal(0.0, 0.3, (h, h)).astype(np.float32)
    tau = rng.uniform(3.0, 30.0, h).astype(np.float32)
    return rng, w, b, m, tau


def _euler_reference(x: np.ndarray, w, b, m, tau, r, v_leak, thr, w_out, b_out, dt: float) -> np.ndarray:
    """NIR's LIF (reset to 0) with a recurrent Linear, one Euler step of dt per sample, in float64."""
    v = np.zeros((x.shape[1], w.shape[0]))
    z = np.zeros_like(v)
    out = []
    for xt in x:
        i = xt @ w.T.astype(np.float64) + b + z @ m.T.astype(np.float64)
        v = v + dt / tau * (v_leak - v + r * i)
        z = (v > thr).astype(np.float64)
        v = np.where(z > 0, 0.0, v)
        out.append(z @ w_out.T.astype(np.float64) + b_out)
    return np.stack(out)


@pytest.mark.parametrize("nested", [False, True])
def test_foreign_lif_graph_without_metadata(nested):
    """r != tau/dt, a leak voltage and a recurrent diagonal are folded into spikestab's weights and bias;
    ``nested`` puts the neuron and its recurrent Linear in a subgraph, as snnTorch's RLeaky export does."""
    rng, w, b, m, tau = _rng_graph_parts()
    h, dt = 8, 1.0
    r = rng.uniform(0.5, 3.0, h).astype(np.float32)
    v_leak = np.full(h, 0.05, np.float32)
    thr = np.full(h, 0.4, np.float32)
    w_out = rng.normal(0.0, 0.5, (2, h)).astype(np.float32)
    b_out = np.zeros(2, np.float32)
    lif = nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=thr)
    rec = nir.Linear(weight=m)
    if nested:
        sub = nir.NIRGraph(
            nodes={"in": nir.Input(np.array([h])), "lif": lif, "w_rec": rec, "out": nir.Output(np.array([h]))},
            edges=[("in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "out")],
        )
        nodes = {
            "input": nir.Input(np.array([6])),
            "fc": nir.Affine(weight=w, bias=b),
            "rleaky": sub,
            "fc_out": nir.Affine(weight=w_out, bias=b_out),
            "output": nir.Output(np.array([2])),
        }
        edges = [("input", "fc"), ("fc", "rleaky"), ("rleaky", "fc_out"), ("fc_out", "output")]
    else:
        nodes = {
            "input": nir.Input(np.array([6])),
            "fc": nir.Affine(weight=w, bias=b),
            "lif": lif,
            "w_rec": rec,
            "fc_out": nir.Affine(weight=w_out, bias=b_out),
            "output": nir.Output(np.array([2])),
        }
        edges = [
            ("input", "fc"),
            ("fc", "lif"),
            ("lif", "w_rec"),
            ("w_rec", "lif"),
            ("lif", "fc_out"),
            ("fc_out", "output"),
        ]
    model = import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=not nested))
    assert isinstance(model, SNNClassifier)
    layer = model.stack.layers[0]
    assert layer.reset == "multiplicative" and layer.recurrent and bool(layer.recurrent_mask.diagonal().all())
    x = _spikes(n=6, p=0.5)
    ours, spikes, _ = model.run(x)
    assert 0.02 < spikes[0].mean().item() < 0.9
    ref = _euler_reference(x.double().numpy(), w, b, m, tau.astype(np.float64), r, v_leak, thr, w_out, b_out, dt)
    np.testing.assert_allclose(ours.detach().double().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_foreign_adaptive_graph_rescales_the_trace():
    """LI -> Threshold with an adaptation LI (r = 2, so its trace is twice spikestab's) through a Scale:
    read as an ALIF with reset 'none' and beta_adapt = -scale * r."""
    rng, w, b, m, tau = _rng_graph_parts()
    h = 8
    nodes = {
        "input": nir.Input(np.array([6])),
        "fc": nir.Affine(weight=w, bias=b),
        "mem": nir.LI(tau=tau, r=tau.copy(), v_leak=np.zeros(h, np.float32)),
        "spk": nir.Threshold(threshold=np.full(h, 0.5, np.float32)),
        "trace": nir.LI(
            tau=np.full(h, 50.0, np.float32), r=np.full(h, 2.0, np.float32), v_leak=np.zeros(h, np.float32)
        ),
        "gain": nir.Scale(scale=np.full(h, -0.3, np.float32)),
        "output": nir.Output(np.array([h])),
    }
    edges = [
        ("input", "fc"),
        ("fc", "mem"),
        ("mem", "spk"),
        ("spk", "trace"),
        ("trace", "gain"),
        ("gain", "spk"),
        ("spk", "output"),
    ]
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    layer = import_nir(graph)
    assert isinstance(layer, ALIF) and layer.reset == "none" and not layer.recurrent
    np.testing.assert_allclose(layer.beta_adapt.numpy(), 0.6, rtol=1e-6)
    np.testing.assert_allclose(layer.rho.numpy(), 1.0 - 1.0 / 50.0, rtol=1e-6)
    x = _spikes(n=6, p=0.5)
    theirs = _nirtorch_run(graph, x, 1.0)
    ours, _ = layer(x)
    assert 0.02 < ours.mean().item() < 0.9
    assert torch.equal(theirs, ours)


def test_metadata_free_copy_of_an_export_imports_to_the_same_spikes():
    model = _classifier("alif", "none")
    graph = export_nir(model)
    bare = nir.NIRGraph(
        nodes={k: type(v).from_dict({**v.to_dict(), "metadata": {}}) for k, v in graph.nodes.items()},
        edges=list(graph.edges),
    )
    back = import_nir(bare)
    x = _spikes()
    la, sa, _ = model.run(x)
    lb, sb, _ = back.run(x)
    assert all(torch.equal(p, q) for p, q in zip(sa, sb))
    torch.testing.assert_close(lb, la)
    assert back.stack.layers[1].spike_fn.shape == "fast-sigmoid"


# --- other models, paths, errors ----------------------------------------------------------------------------


def test_single_layers_stack_and_cell_round_trip(tmp_path):
    x = _spikes(n=5)
    for layer in (
        LIF(5, 6, recurrent=False, reset="multiplicative", threshold=0.3, batch_first=True),
        ALIF(5, 6, recurrent=True, reset="none", threshold=0.3, bias=True),
    ):
        back = import_nir(_through_file(export_nir(layer, sample=x), tmp_path))
        assert type(back) is type(layer) and back.batch_first == layer.batch_first
        xin = x.transpose(0, 1) if layer.batch_first else x
        assert torch.equal(back(xin)[0], layer(xin)[0])
    cell = LIFCell(5, 6, reset="subtract", threshold=0.3)
    back = import_nir(export_nir(cell))
    assert type(back) is LIFCell and torch.equal(back(x[0])[0], cell(x[0])[0])
    stack = SpikingStack(
        SNNConfig(input_size=5, output_size=2, hidden_sizes=(6, 4), threshold=0.3, dropout=0.0), 5
    ).eval()
    path = tmp_path / "stack.nir"
    nir.write(path, export_nir(stack))
    back = import_nir(str(path))
    assert isinstance(back, SpikingStack)
    assert all(torch.equal(p, q) for p, q in zip(stack(x)[1], back(x)[1]))


def test_bad_input_is_a_value_error_naming_it():
    cfg = SNNConfig(input_size=4, output_size=5, hidden_sizes=(4,))
    with pytest.raises(ValueError, match="SNNLanguageModel"):
        export_nir(SNNLanguageModel(cfg))
    slstm = SNNClassifier(SNNConfig(input_size=4, output_size=5, hidden_sizes=(4,), net="slstm"))
    with pytest.raises(ValueError, match="layer 0 must be a spikestab LIF, .* got SLSTM"):
        export_nir(slstm)
    with pytest.raises(ValueError, match="Linear"):
        export_nir(torch.nn.Linear(3, 2))
    layer = LIF(3, 4)
    layer.reset = "bogus"
    with pytest.raises(ValueError, match="'bogus'"):
        export_nir(layer)
    with pytest.raises(ValueError, match="dt"):
        export_nir(LIF(3, 4), dt=0.0)
    with pytest.raises(ValueError, match="input_size=3"):
        export_nir(LIF(3, 4), sample=torch.zeros(10, 2, 5))
    graph = export_nir(LIF(3, 4, reset="multiplicative"))
    graph.nodes["layer0_spikes"].metadata["reset"] = "sideways"
    with pytest.raises(ValueError, match="sideways"):
        import_nir(graph)
    graph.nodes["layer0_spikes"].metadata["reset"] = "subtract"
    with pytest.raises(ValueError, match="does not match"):
        import_nir(graph)
    graph = export_nir(LIF(3, 4, reset="multiplicative", tau=5.0))
    with pytest.raises(ValueError, match="larger than dt"):
        import_nir(graph, dt=10.0)
    graph.nodes["layer0_spikes"].v_reset = np.full(4, 0.5, np.float32)
    with pytest.raises(ValueError, match="v_reset"):
        import_nir(graph)
    conv = nir.NIRGraph.from_list(
        nir.Conv1d(
            input_shape=8, weight=np.ones((2, 1, 3)), stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(2)
        )
    )
    with pytest.raises(ValueError, match="node 'conv1d' is a Conv1d, where spikestab reads a projection"):
        import_nir(conv)
    integrate = nir.NIRGraph.from_list(
        nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
        nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
    )
    with pytest.raises(ValueError, match="node 'if' is a IF"):
        import_nir(integrate)
    with pytest.raises(ValueError, match="NIRGraph"):
        import_nir(42)


def test_without_the_nir_package_the_error_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "spikestab.nir" or m.startswith("spikestab.nir.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nir", None)
    import spikestab.nir as lazy  # importing the module needs no nir

    with pytest.raises(ImportError, match=r"spikestab\[nir\]"):
        lazy.export_nir(LIF(3, 4))
    with pytest.raises(ImportError, match=r"spikestab\[nir\]"):
        lazy.import_nir("model.nir")


def test_float64_model_comes_back_in_float64(tmp_path):
    cfg = SNNConfig(input_size=5, output_size=3, hidden_sizes=(6,), net="alif", reset="none", threshold=0.3)
    model = SNNClassifier(cfg).double().eval()
    back = import_nir(_through_file(export_nir(model), tmp_path))
    x = _spikes(n=5).double()
    assert back.readout.weight.dtype == torch.float64 and back.stack.layers[0].weight_ih.dtype == torch.float64
    assert torch.equal(back(x), model(x))
