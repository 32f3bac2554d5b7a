"""A second library reads spikestab's NIR files: snnTorch's importer (``snntorch.import_nir``) runs an exported
feed-forward LIF network and produces the same spikes and logits (tests/test_nir_peers.py: recurrent layers,
Norse, and the other direction)."""

from __future__ import annotations

import pytest
import torch

nir = pytest.importorskip("nir")
snn_nir = pytest.importorskip("snntorch.import_nir")
from spikestab import SNNClassifier, SNNConfig  # noqa: E402 (after the skips)
from spikestab.nir import SNNTORCH_DT, export_nir  # noqa: E402 (snnTorch's importer steps by 1e-4)


def _model() -> SNNClassifier:
    """Feed-forward LIF with the reset NIR's LIF node has (to 0), per-neuron tau, one threshold per layer
    (snnTorch's importer takes a single threshold)."""
    torch.manual_seed(0)
    cfg = SNNConfig(
        input_size=7,
        output_size=3,
        hidden_sizes=(9, 6),
        net="lif",
        reset="multiplicative",
        recurrent=False,
        dropout=0.0,
        threshold=0.5,
    )
    model = SNNClassifier(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.stack.layers:
            layer.tau.copy_(2.0 + 40.0 * torch.rand(layer.hidden_size, generator=g))
    return model


def _snntorch_run(graph, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """snnTorch's module from the graph, stepped over time: logits [T, B, C] and each Leaky's spikes."""
    net = snn_nir.import_from_nir(graph)
    spikes: list[list[torch.Tensor]] = [[], []]
    for i, record in enumerate(spikes):
        getattr(net, f"layer{i}_spikes").register_forward_hook(lambda m, a, out, record=record: record.append(out))
    with torch.no_grad():
        logits = torch.stack([net(xt)[0] for xt in x])
    return logits, [torch.stack(record) for record in spikes]


def test_snntorch_runs_the_exported_feed_forward_lif_with_the_same_spikes(tmp_path):
    model = _model()
    x = (torch.rand(40, 3, 7, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    with torch.no_grad():
        logits, spikes, _ = model.run(x)
    assert all(0.02 < z.mean().item() < 0.9 for z in spikes), "both layers must spike sometimes"
    path = tmp_path / "lif.nir"
    nir.write(path, export_nir(model, dt=SNNTORCH_DT))
    theirs, their_spikes = _snntorch_run(nir.read(path), x)
    for mine, their in zip(spikes, their_spikes):
        assert torch.equal(their, mine)
    torch.testing.assert_close(theirs, logits, rtol=1e-5, atol=1e-6)


def test_at_another_dt_snntorch_reads_another_network():
    """snnTorch's importer fixes its step at 1e-4 whatever the graph says: an export at dt = 1 is read with
    almost no leak and a rescaled threshold, so its spikes differ; the export's dt has to be snnTorch's."""
    model = _model()
    x = (torch.rand(40, 3, 7, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    with torch.no_grad():
        spikes = model.run(x)[1]
    their_spikes = _snntorch_run(export_nir(model, dt=1.0), x)[1]
    assert not torch.equal(their_spikes[0], spikes[0])
