"""Adapters that let the stability engine work on spiking neurons of other libraries: snnTorch
(``Leaky``, ``RLeaky``, ``Synaptic``, ``RSynaptic``), Norse (``LIFCell``, ``LIFRecurrentCell``, ``LIF``,
``LIFRecurrent``, ``LSNNCell``, ``LSNNRecurrentCell``, ``LSNN``, ``LSNNRecurrent``) and SpikingJelly
(``neuron.LIFNode``). Each adapter (:class:`PeerNeurons`) reads and writes one module's threshold and
SG in the library's own parameters and records the module on the user's own forward pass; the engine
that uses them is ``spikestab.stability.peer``. The peer libraries are imported only when a model holds
their modules."""

from __future__ import annotations

import importlib

from torch import nn

from .base import PeerNeurons, PeerSurrogate, Tap
from .norse_neurons import NorseNeurons
from .snntorch_neurons import SnnTorchNeurons
from .spikingjelly_neurons import SpikingJellyNeurons

__all__ = ["PeerNeurons", "PeerSurrogate", "Tap", "find_peer_neurons", "SUPPORTED"]

# library -> (the module exporting its neuron classes, the adapter (its ``CLASSES`` are the classes spikestab
# adapts), the module and names of the base classes of all its neurons: a module deriving from one that is
# not supported is refused by name). The adapter modules import their library only when used.
LIBRARIES: dict[str, tuple[str, type[PeerNeurons], str, tuple[str, ...]]] = {
    "snntorch": ("snntorch", SnnTorchNeurons, "snntorch", ("SpikingNeuron",)),
    "norse": (
        "norse.torch",
        NorseNeurons,
        "norse.torch.module.snn",
        ("SNNCell", "SNNRecurrentCell", "SNN", "SNNRecurrent"),
    ),
    "spikingjelly": (
        "spikingjelly.activation_based.neuron",
        SpikingJellyNeurons,
        "spikingjelly.activation_based.neuron",
        ("BaseNode", "SimpleBaseNode"),
    ),
}
SUPPORTED = {lib: spec[1].CLASSES for lib, spec in LIBRARIES.items()}


def _library(module: nn.Module) -> str | None:
    root = type(module).__module__.split(".")[0]
    return root if root in LIBRARIES else None


def _classes(where: str, names: tuple[str, ...]) -> tuple[type, ...]:
    namespace = importlib.import_module(where)
    return tuple(getattr(namespace, n) for n in names)


def _adapter(module: nn.Module, name: str, lib: str) -> PeerNeurons | None:
    """The adapter of ``module`` (a module of ``lib``), None when it is not a spiking neuron; ValueError
    when it is one that no adapter knows."""
    where, adapter, base_where, bases = LIBRARIES[lib]
    if isinstance(module, _classes(where, adapter.CLASSES)):
        return adapter(name, module)
    if isinstance(module, _classes(base_where, bases)):
        raise ValueError(f"{name} ({lib}.{type(module).__name__})")
    return None


def find_peer_neurons(model: nn.Module) -> list[PeerNeurons]:
    """An adapter for every supported spiking module of another library in ``model``, in registration
    order. ValueError naming the module for a spiking neuron of those libraries that no adapter knows."""
    found: list[PeerNeurons] = []
    unknown = []
    for name, module in model.named_modules():
        lib = _library(module)
        if lib is None:
            continue
        try:
            adapter = _adapter(module, name or "(model)", lib)
        except ValueError as which:
            unknown.append(str(which))
            continue
        if adapter is not None:
            found.append(adapter)
    if unknown:
        listed = "; ".join(f"{lib}: {', '.join(classes)}" for lib, classes in SUPPORTED.items())
        raise ValueError(
            f"spikestab cannot stabilise the spiking module(s) {', '.join(unknown)}: the supported "
            f"neurons of other libraries are {listed}"
        )
    return found
