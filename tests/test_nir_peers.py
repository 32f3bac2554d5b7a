"""NIR between spikestab and the peer libraries, run by the peers themselves (snnTorch 1.0, Norse 1.1, no
mocks): graphs their exporters write import into spikestab with the spikes their own networks make, and
spikestab's exports for their readers run in them with spikestab's spikes (docs/nir.md, "Other libraries")."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
snn = pytest.importorskip("snntorch")
norse = pytest.importorskip("norse.torch")
from snntorch import utils as snn_utils  # noqa: E402 (after the skips)
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

from spikestab import LIF, SNNClassifier, SNNConfig  # noqa: E402
from spikestab.models import SpikingStack  # noqa: E402
from spikestab.neurons.cuba import CubaLIF  # noqa: E402
from spikestab.nir import NORSE_DT, SNNTORCH_DT, export_nir, import_nir  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _quiet_peers():
    """snnTorch prints and Norse logs warnings about the graphs they read (r != 1, weight scaling)."""
    logging.disable(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


def _input(t: int = 120, b: int = 4, n: int = 7, p: float = 0.4, seed: int = 5) -> torch.Tensor:
    return (torch.rand(t, b, n, generator=torch.Generator().manual_seed(seed)) < p).float()


def _assert_spiking(spikes: list[torch.Tensor]) -> None:
    assert all(0.02 < z.mean().item() < 0.9 for z in spikes), [round(z.mean().item(), 3) for z in spikes]


def _assert_same_spikes(theirs: list[torch.Tensor], ours: list[torch.Tensor]) -> None:
    assert len(theirs) == len(ours)
    for layer, (a, b) in enumerate(zip(theirs, ours)):
        agree = (a == b.to(a.dtype)).float().mean().item()
        assert torch.equal(a, b.to(a.dtype)), f"layer {layer}: {agree:.4f} of the spikes agree"


def _agreement(theirs: list[torch.Tensor], ours: list[torch.Tensor]) -> list[float]:
    return [(a == b.to(a.dtype)).float().mean().item() for a, b in zip(theirs, ours)]


# --- snnTorch -> spikestab ----------------------------------------------------------------------------------


def _snntorch_net(neurons: tuple[str, ...], reset: str | list[str], seed: int = 0, n_in: int = 7, width: int = 9):
    """snnTorch layers as its tutorials stack them (nn.Linear, then a neuron with init_hidden), with beta and
    threshold as per-neuron tensors: snnTorch 1.0's exporter fails on scalar ones. ``reset``: one
    reset_mechanism, or one per layer."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    mods: list[torch.nn.Module] = []
    resets = [reset] * len(neurons) if isinstance(reset, str) else reset
    for kind, reset in zip(neurons, resets):
        beta = 0.6 + 0.35 * torch.rand(width, generator=g)
        thr = torch.full((width,), 0.5)
        mods.append(torch.nn.Linear(n_in, width))
        if kind == "rleaky":
            mods.append(
                snn.RLeaky(beta=beta, threshold=thr, linear_features=width, init_hidden=True, reset_mechanism=reset)
            )
        else:
            mods.append(snn.Leaky(beta=beta, threshold=thr, init_hidden=True, reset_mechanism=reset))
        n_in = width
    return torch.nn.Sequential(*mods)


def _snntorch_spikes(net: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Each snnTorch neuron's spikes [T, B, H], stepped the way its tutorials loop over time."""
    snn_utils.reset(net)
    record: dict[int, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda m, a, out, k=k: record.setdefault(k, []).append(out))
        for k, m in enumerate(net)
        if isinstance(m, (snn.Leaky, snn.RLeaky))
    ]
    with torch.no_grad():
        for xt in x:
            net(xt)
    for hook in hooks:
        hook.remove()
    return [torch.stack(record[k]) for k in sorted(record)]


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("neurons", [("leaky", "leaky"), ("rleaky", "leaky"), ("rleaky", "rleaky")])
def test_snntorch_export_imports_with_its_spikes(neurons, reset, tmp_path):
    net = _snntorch_net(neurons, reset)
    x = _input()
    theirs = _snntorch_spikes(net, x)
    _assert_spiking(theirs)
    path = tmp_path / "snntorch.nir"
    nir.write(path, export_to_nir(net, torch.zeros(7)))
    model = import_nir(str(path), source="snntorch", reset=reset)
    assert isinstance(model, SpikingStack) and [layer.recurrent for layer in model.layers] == [
        kind == "rleaky" for kind in neurons
    ]
    expected = {"subtract": "subtract", "zero": "multiplicative", "none": "none"}
    for kind, layer in zip(neurons, model.layers):
        rleaky_zero = kind == "rleaky" and reset == "zero"
        assert layer.reset == ("multiplicative_all" if rleaky_zero else expected[reset])
    with torch.no_grad():
        ours = model(x)[1]
    _assert_same_spikes(theirs, ours)


def test_snntorch_rleaky_recurrent_bias_joins_the_layer_bias():
    net = _snntorch_net(("rleaky",), "subtract")
    rleaky = net[1]
    assert rleaky.recurrent.bias.abs().min() > 0, "the RLeaky's recurrent nn.Linear has a bias by default"
    layer = import_nir(export_to_nir(net, torch.zeros(7)), source="snntorch")
    torch.testing.assert_close(layer.bias, net[0].bias + rleaky.recurrent.bias)
    torch.testing.assert_close(layer.weight_hh, rleaky.recurrent.weight)
    with torch.no_grad():
        ours = layer(_input())[0]
    _assert_same_spikes(_snntorch_spikes(net, _input()), [ours])


def test_snntorch_graph_with_one_reset_per_layer():
    net = _snntorch_net(("rleaky", "leaky"), ["zero", "subtract"])
    x = _input()
    model = import_nir(export_to_nir(net, torch.zeros(7)), source="snntorch", reset=["zero", "subtract"])
    assert [layer.reset for layer in model.layers] == ["multiplicative_all", "subtract"]
    with torch.no_grad():
        ours = model(x)[1]
    _assert_same_spikes(_snntorch_spikes(net, x), ours)


def test_snntorch_graph_read_at_another_step_or_reset_differs():
    """The graph holds neither snnTorch's step nor its reset_mechanism: read at dt=1 or with reset 'zero', a
    subtract network is another network (the reason for source= and reset=)."""
    net = _snntorch_net(("leaky", "leaky"), "subtract")
    graph = export_to_nir(net, torch.zeros(7))
    assert graph.metadata == {}
    with pytest.raises(ValueError, match="larger than dt=1"):
        import_nir(graph)
    x = _input()
    theirs = _snntorch_spikes(net, x)
    with torch.no_grad():
        zero = import_nir(graph, source="snntorch", reset="zero")(x)[1]
    assert not all(torch.equal(a, b) for a, b in zip(theirs, zero))
    assert import_nir(graph, dt=SNNTORCH_DT, reset="subtract").layers[0].reset == "subtract"


def test_snntorch_cannot_export_its_default_scalar_network():
    """snnTorch 1.0's export_to_nir fails on Leaky(beta=0.9) (a scalar beta and threshold): nir's type check
    sees a neuron with shape []. Per-neuron tensors (above) export."""
    net = torch.nn.Sequential(torch.nn.Linear(7, 9), snn.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(ValueError, match="Type inference error"):
        export_to_nir(net, torch.zeros(7))


# --- Norse -> spikestab -------------------------------------------------------------------------------------


def _norse_net(cell, gain: float, seed: int = 0, n_in: int = 7, widths=(9, 9)):
    torch.manual_seed(seed)
    mods: list[torch.nn.Module] = []
    for width in widths:
        linear = torch.nn.Linear(n_in, width)
        with torch.no_grad():
            linear.weight.mul_(gain)
            linear.bias.add_(0.3)
        mods += [linear, cell()]
        n_in = width
    return norse.SequentialState(*mods)


def _norse_spikes(net, x: torch.Tensor) -> list[torch.Tensor]:
    record: dict[int, list[torch.Tensor]] = {}
    for k, m in enumerate(net):
        if not isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda m, a, out, k=k: record.setdefault(k, []).append(out[0]))
    state = None
    with torch.no_grad():
        for xt in x:
            _, state = net(xt, state)
    return [torch.stack(record[k]) for k in sorted(record)]


@pytest.mark.parametrize("cell,gain,spikestab_type", [("LIFCell", 3.0, CubaLIF), ("LIFBoxCell", 20.0, LIF)])
def test_norse_export_imports_with_its_spikes(cell, gain, spikestab_type, tmp_path):
    """Norse writes a LIFCell as a CubaLIF and a LIFBoxCell as a LIF, with scalar parameters, tau =
    dt / tau_inv (read at dt = 1e-6) and the Input shape of its sample ([1, 7]). nir.write cannot store
    such a graph (HDF5 compresses every array and refuses to for scalars): it is read as an object."""
    net = _norse_net(getattr(norse, cell), gain)
    x = _input(p=0.5)
    theirs = _norse_spikes(net, x)
    _assert_spiking(theirs)
    graph = norse.to_nir(net, torch.zeros(1, 7))
    assert np.asarray(graph.nodes["1"].v_threshold).shape == ()
    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write(tmp_path / "norse.nir", graph)
    model = import_nir(graph, source="norse")
    assert all(type(layer) is spikestab_type and layer.reset == "multiplicative" for layer in model.layers)
    with torch.no_grad():
        ours = model(x)[1]
    _assert_same_spikes(theirs, ours)


def _norse_style_graph(cell, dt: float = 1e-3):
    """A Norse recurrent LIF written the way Norse 1.1's to_nir writes a LIFCell (CubaLIF, tau = dt/tau_inv,
    r = w_in = 1, scalars), with its input weights as an Affine and its recurrent weights as a Linear loop:
    Norse's own to_nir writes None for LIFRecurrent and LIFRecurrentCell."""
    p, n = cell.p, cell.hidden_size
    lif = nir.CubaLIF(
        tau_mem=(dt / p.tau_mem_inv).numpy(),
        tau_syn=(dt / p.tau_syn_inv).numpy(),
        r=np.ones(()),
        v_leak=p.v_leak.numpy(),
        v_threshold=p.v_th.numpy(),
        w_in=np.ones(()),
    )
    nodes = {
        "input": nir.Input(np.array([cell.input_size])),
        "w_in": nir.Affine(weight=cell.input_weights.detach().numpy(), bias=np.zeros(n, np.float32)),
        "lif": lif,
        "w_rec": nir.Linear(weight=cell.recurrent_weights.detach().numpy()),
        "output": nir.Output(np.array([n])),
    }
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_norse_cannot_export_its_recurrent_modules():
    graph = norse.to_nir(norse.LIFRecurrent(7, 9), torch.zeros(4, 1, 7))
    assert graph.nodes["norse"] is None


@pytest.mark.parametrize("module", ["LIFRecurrent", "LIFRecurrentCell"])
def test_norse_recurrent_lif_in_norse_convention_imports_with_its_spikes(module):
    torch.manual_seed(0)
    cell = getattr(norse, module)(7, 9)
    with torch.no_grad():
        cell.input_weights.mul_(3.0)
    x = _input(t=200)
    with torch.no_grad():
        if module == "LIFRecurrent":
            theirs = cell(x)[0]
        else:
            state, out = None, []
            for xt in x:
                z, state = cell(xt, state)
                out.append(z)
            theirs = torch.stack(out)
    _assert_spiking([theirs])
    layer = import_nir(_norse_style_graph(cell), source="norse")
    assert isinstance(layer, CubaLIF) and layer.recurrent
    assert import_nir(_norse_style_graph(cell), source="norse", dt=NORSE_DT).recurrent
    with torch.no_grad():
        ours = layer(x)[0]
    _assert_same_spikes([theirs], [ours])


# --- spikestab -> snnTorch and Norse ------------------------------------------------------------------------


def _spikestab_model(reset: str, recurrent: bool, seed: int = 0) -> SNNClassifier:
    """spikestab's default network (2 layers, default tau, threshold, bias, recurrence), small."""
    torch.manual_seed(seed)
    cfg = SNNConfig(input_size=20, output_size=3, hidden_sizes=(16, 12), reset=reset, recurrent=recurrent, dropout=0.0)
    return SNNClassifier(cfg).eval()


def _graph_spikes(net, x: torch.Tensor, neuron_types) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and each neuron module's spikes of a peer's executor of a NIR graph, state carried over steps."""
    record: dict[str, list[torch.Tensor]] = {}
    for name, m in net.named_modules():
        if isinstance(m, neuron_types):
            m.register_forward_hook(
                lambda m, a, out, k=name: record.setdefault(k, []).append(out[0] if isinstance(out, tuple) else out)
            )
    state, out = None, []
    with torch.no_grad():
        for xt in x:
            y, state = net(xt, state)
            out.append(y)
    return torch.stack(out), [torch.stack(record[k]) for k in sorted(record)]


def _run_in_snntorch(graph, x):
    net = import_from_nir(graph)
    snn_utils.reset(net)
    return _graph_spikes(net, x, (snn.Leaky, snn.RLeaky))


def _run_in_norse(graph, x, dt: float = 1e-3):
    return _graph_spikes(norse.from_nir(graph, dt=dt), x, norse.LIFBoxCell)  # a CubaLIF holds one too


READERS = {"snntorch": _run_in_snntorch, "norse": _run_in_norse}


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("form", ["snntorch", "norse"])
def test_peer_reader_runs_spikestab_export_with_its_spikes(form, recurrent, tmp_path):
    model = _spikestab_model("multiplicative", recurrent)
    x = _input(t=150, n=20, p=0.3)
    with torch.no_grad():
        logits, spikes, _ = model.run(x)
    _assert_spiking(spikes)
    path = tmp_path / f"{form}.nir"
    nir.write(path, export_nir(model, form=form))
    their_logits, theirs = READERS[form](nir.read(path), x)
    _assert_same_spikes(theirs, spikes)
    torch.testing.assert_close(their_logits, logits, rtol=1e-5, atol=1e-5)
    for source in ("nir", form):
        back = import_nir(str(path), source=source)
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(back.run(x)[1], spikes))


@pytest.mark.parametrize("form", ["snntorch", "norse"])
def test_default_subtract_network_is_refused_or_approximated_for_peer_readers(form):
    """Both readers reset every neuron to 0: spikestab's default 'subtract' layers are refused, and with
    strict=False written as layers that reset to 0, whose spikes differ from the first steps on (the
    agreement docs/nir.md reports); import_nir still restores the exact network from the metadata."""
    model = _spikestab_model("subtract", True)
    with pytest.raises(ValueError, match="reset='subtract'.*resets every neuron it reads to 0.*strict=False"):
        export_nir(model, form=form)
    x = _input(t=150, n=20, p=0.3)
    with torch.no_grad():
        spikes = model.run(x)[1]
    graph = export_nir(model, form=form, strict=False)
    assert graph.metadata["nir_exact"] is False
    agreement = _agreement(READERS[form](graph, x)[1], spikes)
    assert all(0.8 < a < 1.0 for a in agreement), agreement
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(import_nir(graph).run(x)[1], spikes))


def test_cuba_layer_round_trips_and_runs_in_norse():
    torch.manual_seed(0)
    cfg = SNNConfig(
        input_size=20,
        output_size=3,
        hidden_sizes=(16, 12),
        net="cuba",
        reset="multiplicative",
        dropout=0.0,
        threshold=0.5,
    )
    model = SNNClassifier(cfg).eval()
    x = _input(t=150, n=20, p=0.3)
    with torch.no_grad():
        logits, spikes, _ = model.run(x)
    _assert_spiking(spikes)
    graph = export_nir(model)
    assert all(isinstance(graph.nodes[f"layer{i}_spikes"], nir.CubaLIF) for i in range(2))
    back = import_nir(graph)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(back.run(x)[1], spikes))
    assert all(torch.equal(a.tau_syn, b.tau_syn) for a, b in zip(model.stack.layers, back.stack.layers))
    their_logits, theirs = _run_in_norse(export_nir(model, form="norse"), x)
    _assert_same_spikes(theirs, spikes)


def test_peer_forms_name_what_their_reader_cannot_run():
    alif = SNNClassifier(SNNConfig(input_size=4, output_size=2, hidden_sizes=(5,), net="alif", reset="none"))
    for form in ("snntorch", "norse"):
        with pytest.raises(ValueError, match="layer 0 \\(ALIF\\).*reads no adaptive neuron.*form='nir'"):
            export_nir(alif, form=form)
    layer = LIF(4, 5, reset="multiplicative", threshold=torch.linspace(0.5, 1.0, 5))
    with pytest.raises(ValueError, match="per-neuron thresholds; snnTorch's import_from_nir takes one threshold"):
        export_nir(layer, form="snntorch")
    with pytest.raises(ValueError, match=r"dt must be 0.0001 for form='snntorch'"):
        export_nir(LIF(4, 5, reset="multiplicative"), form="snntorch", dt=1e-3)
    with pytest.raises(ValueError, match="form must be one of"):
        export_nir(layer, form="lava")
    with pytest.raises(ValueError, match="source must be one of"):
        import_nir(export_nir(layer), source="lava")
    with pytest.raises(ValueError, match="reset must be snnTorch's reset_mechanism"):
        import_nir(export_nir(layer), source="snntorch", reset="multiplicative")
    with pytest.raises(ValueError, match=r"reset must be one name or one per spiking layer \(1\)"):
        import_nir(export_nir(layer), reset=["subtract", "none"])


# --- nn.Sequential ------------------------------------------------------------------------------------------


def test_sequential_of_spikestab_layers_exports_and_runs_in_snntorch():
    torch.manual_seed(0)
    layers = [LIF(20, 16, reset="multiplicative", bias=True), LIF(16, 12, recurrent=False, reset="multiplicative")]
    seq = torch.nn.Sequential(layers[0], torch.nn.Dropout(0.1), layers[1], torch.nn.Linear(12, 3)).eval()
    x = _input(t=150, n=20, p=0.3)
    with torch.no_grad():
        z0, _ = layers[0](x)
        z1, _ = layers[1](z0)
        logits = seq[3](z1)
    _assert_spiking([z0, z1])
    graph = export_nir(seq)
    assert graph.metadata["model"] == "Sequential"
    back = import_nir(graph)
    assert isinstance(back, SNNClassifier)
    with torch.no_grad():
        out, spikes, _ = back.run(x)
    assert torch.equal(spikes[0], z0) and torch.equal(spikes[1], z1) and torch.equal(out, logits)
    their_logits, theirs = _run_in_snntorch(export_nir(seq, form="snntorch"), x)
    _assert_same_spikes(theirs, [z0, z1])
    stack = import_nir(export_nir(torch.nn.Sequential(layers[0])))
    assert isinstance(stack, SpikingStack)
    with pytest.raises(ValueError, match=r"model\[1\] \(ReLU\)"):
        export_nir(torch.nn.Sequential(layers[0], torch.nn.ReLU()))
    with pytest.raises(ValueError, match=r"model\[2\] \(LIF\)"):
        export_nir(torch.nn.Sequential(layers[0], torch.nn.Linear(16, 16), layers[1]))


# --- the surrogate gradient ---------------------------------------------------------------------------------


def test_peer_graphs_get_the_surrogate_of_the_writers_default_neuron():
    """NIR carries no surrogate gradient: a layer read from a peer's graph gets that of the peer's default
    neuron, which converts back to the peer's native object."""
    from spikestab.surrogate import to_norse, to_snntorch

    layer = import_nir(export_to_nir(_snntorch_net(("leaky",), "subtract"), torch.zeros(7)), source="snntorch")
    sg = layer.spike_fn
    assert sg.shape == "arctan" and sg.dampening.item() == 1.0 and sg.sharpness.item() == 1.0
    assert to_snntorch(sg).__qualname__.startswith("atan.")
    stack = import_nir(norse.to_nir(_norse_net(norse.LIFBoxCell, 20.0), torch.zeros(1, 7)), source="norse")
    assert to_norse(stack.layers[0].spike_fn) == ("super", 100.0)
    assert import_nir(export_nir(LIF(4, 5, reset="multiplicative"))).spike_fn.shape == "fast-sigmoid"
