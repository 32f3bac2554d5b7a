"""spikestab model -> NIR graph (``export_nir``); the representation is described in docs/nir.md."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import Tensor, nn

from ..dynamics import RESETS
from ..models import SNNClassifier, SNNLanguageModel, SpikingStack
from ..neurons import ALIF, LIF, ALIFCell, LIFCell, SpikingNeurons
from ..neurons.cuba import CubaLIF
from . import mapping

LAYER_TYPES: dict[str, type[SpikingNeurons]] = {
    "LIF": LIF,
    "ALIF": ALIF,
    "LIFCell": LIFCell,
    "ALIFCell": ALIFCell,
    "CubaLIF": CubaLIF,
}
FAMILY = {"LIF": "lif", "LIFCell": "lif", "ALIF": "alif", "ALIFCell": "alif", "CubaLIF": "cuba"}

# (family, reset) -> (neuron core, reset loop, exact in NIR). Core "lif": one nir.LIF node (reset to 0);
# "cuba": one nir.CubaLIF node (reset to 0); "li": nir.LI membrane -> nir.Threshold; the reset loop is
# Threshold -> Linear(-diag threshold) -> LI.
STRUCTURE = {
    ("lif", "multiplicative"): ("lif", False, True),
    ("lif", "subtract"): ("li", True, True),
    ("lif", "none"): ("li", False, True),
    ("lif", "multiplicative_all"): ("lif", False, False),
    ("alif", "none"): ("li", False, True),
    ("alif", "subtract"): ("li", True, False),
    ("alif", "multiplicative"): ("li", False, False),
    ("alif", "multiplicative_all"): ("li", False, False),
    ("cuba", "multiplicative"): ("cuba", False, True),
    ("cuba", "subtract"): ("cuba", False, False),
    ("cuba", "none"): ("cuba", False, False),
    ("cuba", "multiplicative_all"): ("cuba", False, False),
}

APPROXIMATION = {
    ("lif", "multiplicative_all"): "a LIF that resets to 0 (spikestab also drops the input of the step after a spike)",
    ("alif", "subtract"): "an adaptive neuron that subtracts the fixed threshold, not A_t = threshold + beta_adapt a_t",
    ("alif", "multiplicative"): "an adaptive neuron without reset",
    ("alif", "multiplicative_all"): "an adaptive neuron without reset",
    ("cuba", "subtract"): "a CubaLIF that resets to 0",
    ("cuba", "none"): "a CubaLIF that resets to 0",
    ("cuba", "multiplicative_all"): "a CubaLIF that resets to 0 (spikestab also drops the step's synaptic current)",
}

# The readers export_nir writes a form for (docs/nir.md, "Forms for other readers"), and their step.
FORMS = ("nir", "snntorch", "norse")
NORSE_READ_DT = 1e-3  # norse.torch.from_nir's default dt: the step the "norse" form is written for by default
FORM_DT = {"nir": mapping.DEFAULT_DT, "snntorch": mapping.SNNTORCH_DT, "norse": NORSE_READ_DT}


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _meta_value(t: Tensor) -> np.ndarray | float:
    """A tensor for metadata: a 0-d one as a float (HDF5 compresses arrays, and refuses that for scalars)."""
    return float(t.item()) if t.dim() == 0 else _np(t)


def _sequential_layers(model: nn.Sequential) -> tuple[list[SpikingNeurons], nn.Linear | None]:
    """The spiking layers of an ``nn.Sequential`` and its final ``nn.Linear`` readout (Dropout and Identity,
    which do nothing at inference, are skipped)."""
    layers: list[SpikingNeurons] = []
    readout = None
    for name, child in model.named_children():
        if isinstance(child, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(child, SpikingNeurons) and readout is None:
            layers.append(child)
        elif isinstance(child, nn.Linear) and layers and readout is None:
            readout = child
        else:
            raise ValueError(
                f"model[{name}] ({type(child).__name__}): an nn.Sequential exports as spikestab spiking "
                "layers (each with its own input weights), then at most one nn.Linear readout last "
                "(Dropout and Identity are skipped)"
            )
    if not layers:
        raise ValueError("model (nn.Sequential) must contain at least one spikestab spiking layer")
    return layers, readout


def _layers_of(model: nn.Module) -> tuple[list[SpikingNeurons], nn.Linear | None, str]:
    if isinstance(model, SNNLanguageModel):
        raise ValueError(
            "model SNNLanguageModel is not supported: its embedding and tied output projection have "
            "no NIR node (export model.stack instead)"
        )
    if isinstance(model, SNNClassifier):
        return _stack_layers(model.stack), model.readout, "SNNClassifier"
    if isinstance(model, SpikingStack):
        return _stack_layers(model), None, "SpikingStack"
    if isinstance(model, nn.Sequential):
        return (*_sequential_layers(model), "Sequential")
    if isinstance(model, SpikingNeurons):
        return [model], None, _layer_name(model, "model")
    raise ValueError(
        f"model must be a spikestab SNNClassifier, SpikingStack, LIF/ALIF/CubaLIF layer or cell, or an "
        f"nn.Sequential of them, got {type(model).__name__}"
    )


def _stack_layers(stack: SpikingStack) -> list[SpikingNeurons]:
    """The stack's layers; ValueError naming the first without a NIR node (an sLSTM)."""
    layers = []
    for i, layer in enumerate(stack.layers):
        if not isinstance(layer, SpikingNeurons):
            raise _not_a_layer(f"layer {i}", layer)
        layers.append(layer)
    return layers


def _layer_name(layer: nn.Module, where: str) -> str:
    for name, cls in LAYER_TYPES.items():
        if isinstance(layer, cls) and type(layer).adaptive == cls.adaptive:
            if layer.custom_current:
                raise ValueError(
                    f"{where} ({type(layer).__name__}) overrides input_current, which NIR's Affine "
                    "projection cannot express"
                )
            return name
    raise _not_a_layer(where, layer)


def _not_a_layer(where: str, layer: nn.Module) -> ValueError:
    """The error for a module at ``where`` that is none of ``LAYER_TYPES``."""
    return ValueError(
        f"{where} must be a spikestab LIF, ALIF, CubaLIF, LIFCell or ALIFCell, got {type(layer).__name__}"
    )


def _check_sample(sample: Tensor | None, width: int) -> None:
    if sample is None:
        return
    if not isinstance(sample, Tensor):
        raise ValueError(f"sample must be a torch.Tensor or None, got {type(sample).__name__}")
    if sample.dim() == 0 or sample.shape[-1] != width:
        raise ValueError(f"sample must have last dimension input_size={width}, got shape {tuple(sample.shape)}")


def _layer_metadata(layer: SpikingNeurons, kind: str, exact: bool, dt: float, form: str) -> dict:
    sg, mask = layer.spike_fn, layer.recurrent_mask
    meta = {
        "library": "spikestab",
        "spikestab_layer": kind,
        "reset": layer.reset,
        "nir_exact": exact,
        "dt": dt,
        "form": form,
        "detach_reset": layer.detach_reset,
        "recurrent": layer.recurrent,
        "recurrent_diagonal": bool(layer.recurrent and mask is not None and bool(mask.diagonal().all())),
        "bias": isinstance(layer.bias, nn.Parameter),
        "learn_tau": layer.tau.requires_grad,
        "learn_threshold": layer.threshold.requires_grad,
        "batch_first": layer.batch_first,
        "backend": layer.backend,
        "checkpoint": json.dumps(getattr(layer, "checkpoint", False)),
        "tau_steps": _np(layer.tau),
        "surrogate": sg.shape,
        "dampening": _meta_value(sg.dampening),
        "sharpness": _meta_value(sg.sharpness),
        "surrogate_learnable": isinstance(sg.dampening, nn.Parameter),
    }
    if sg.shape == "q-pseudospike":
        meta["tail"] = float(sg.tail)
    if layer.adaptive:
        meta["rho"] = _np(layer.rho)
        meta["beta_adapt"] = _np(layer.beta_adapt)
    if isinstance(layer, CubaLIF):
        meta["tau_syn_steps"] = _np(layer.tau_syn)
        meta["learn_tau_syn"] = layer.tau_syn.requires_grad
    return meta


def _check_form(layers: list[SpikingNeurons], kinds: list[str], form: str, strict: bool) -> None:
    """ValueError for a layer the chosen reader cannot run (or, with ``strict``, not run exactly)."""
    if form == "nir":
        return
    reader = {"snntorch": "snnTorch's import_from_nir", "norse": "Norse's from_nir"}[form]
    for i, (layer, kind) in enumerate(zip(layers, kinds)):
        if FAMILY[kind] == "alif":
            raise ValueError(
                f"layer {i} ({kind}): {reader} reads no adaptive neuron (no LI, Threshold or Scale "
                "node); export it with form='nir'"
            )
        if form == "snntorch" and kind == "CubaLIF":
            raise ValueError(f"layer {i} (CubaLIF): form='snntorch' writes LIF layers only; export it with form='nir'")
        if form == "snntorch" and not bool((layer.threshold == layer.threshold.reshape(-1)[0]).all()):
            raise ValueError(f"layer {i} ({kind}) has per-neuron thresholds; {reader} takes one threshold per layer")
        if layer.reset != "multiplicative" and strict:
            raise ValueError(
                f"layer {i} ({kind}, reset={layer.reset!r}): {reader} resets every neuron it reads to "
                "0 (spikestab's 'multiplicative'); pass strict=False to export it anyway as a layer "
                "that resets to 0, whose spikes differ (docs/nir.md)"
            )


def _add_layer(
    nir,
    nodes: dict,
    edges: list,
    source: str,
    layer: SpikingNeurons,
    i: int,
    digits: int,
    kind: str,
    dt: float,
    strict: bool,
    form: str,
) -> tuple[str, bool]:
    """Add layer i's nodes after ``source``; returns (name of the node that emits its spikes, exact)."""
    core, reset_loop, exact = _structure(layer, i, kind, strict, form)
    p, spikes = f"layer{i:0{digits}d}", f"layer{i:0{digits}d}_spikes"
    np_dtype = _np(layer.weight_ih[:0]).dtype
    h = layer.hidden_size
    tau, r = mapping.membrane_to_nir(_np(layer.alpha.to(torch.float64)), dt)
    # Norse's LIF reader ignores r: the form "norse" writes r = 1 and puts r into the weights feeding the node
    scale = r if form == "norse" and core == "lif" else np.ones(h)
    if form == "norse" and core == "lif":
        r = np.ones(h)
    nodes[f"{p}_input"] = nir.Affine(
        weight=np.asarray(scale[:, None] * _np(layer.weight_ih.to(torch.float64)), dtype=np_dtype),
        bias=np.asarray(scale * _np(layer.bias.to(torch.float64)), dtype=np_dtype),
        metadata={"role": "input"},
    )
    edges.append((source, f"{p}_input"))
    membrane = _neuron_nodes(nir, nodes, edges, p, spikes, core, layer, tau, r, dt)
    edges.append((f"{p}_input", membrane))
    _loop_nodes(nir, nodes, edges, p, spikes, membrane, layer, reset_loop, scale, dt)
    nodes[spikes].metadata = _layer_metadata(layer, kind, exact, dt, form)
    if form == "snntorch" and layer.recurrent:
        return _nest_recurrent(nir, nodes, edges, p, spikes, h), exact
    return spikes, exact


def _structure(layer: SpikingNeurons, i: int, kind: str, strict: bool, form: str) -> tuple[str, bool, bool]:
    """Layer i's NIR structure in ``form``: (core node kind, whether a reset loop is drawn, exact);
    ValueError for an unknown reset, or an inexact export with ``strict`` in the form "nir"."""
    if layer.reset not in RESETS:
        raise ValueError(f"layer {i} ({kind}) has unknown reset {layer.reset!r}; expected one of {list(RESETS)}")
    family = FAMILY[kind]
    core, reset_loop, exact = STRUCTURE[(family, layer.reset)]
    if form != "nir" and family == "lif":
        # snnTorch's and Norse's importers read LIF nodes only, and both reset them to 0
        core, reset_loop, exact = "lif", False, layer.reset == "multiplicative"
    if not exact and strict and form == "nir":
        raise ValueError(
            f"layer {i} ({kind}, reset={layer.reset!r}) has no exact NIR equivalent; pass strict=False to export "
            f"it anyway: import_nir restores it exactly from metadata, other NIR readers see "
            f"{APPROXIMATION[(family, layer.reset)]}"
        )
    return core, reset_loop, exact


def _neuron_nodes(
    nir, nodes: dict, edges: list, p: str, spikes: str, core: str, layer: SpikingNeurons, tau, r, dt: float
) -> str:
    """The layer's neuron node(s) (a LIF, a CubaLIF, or an LI membrane and a Threshold); returns the name
    of the node whose state is the membrane voltage."""
    np_dtype = _np(layer.weight_ih[:0]).dtype
    thr = _np(layer.threshold.to(layer.weight_ih.dtype))
    zeros = np.zeros(layer.hidden_size, dtype=np_dtype)
    tau, r = np.asarray(tau, dtype=np_dtype), np.asarray(r, dtype=np_dtype)
    if core == "lif":
        nodes[spikes] = nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=thr, v_reset=zeros.copy())
        return spikes
    if core == "cuba":
        if not isinstance(layer, CubaLIF):
            raise ValueError(f"the neuron core 'cuba' is CubaLIF's, got a {type(layer).__name__}")
        tau_syn, w_in = mapping.synapse_to_nir(_np(layer.alpha_syn.to(torch.float64)), dt)
        nodes[spikes] = nir.CubaLIF(
            tau_syn=np.asarray(tau_syn, dtype=np_dtype),
            tau_mem=tau,
            r=r,
            v_leak=zeros,
            v_threshold=thr,
            v_reset=zeros.copy(),
            w_in=np.asarray(w_in, dtype=np_dtype),
        )
        return spikes
    membrane = f"{p}_membrane"
    nodes[membrane] = nir.LI(tau=tau, r=r, v_leak=zeros, metadata={"role": "membrane"})
    nodes[spikes] = nir.Threshold(threshold=thr)
    edges.append((membrane, spikes))
    return membrane


def _loop_nodes(
    nir,
    nodes: dict,
    edges: list,
    p: str,
    spikes: str,
    membrane: str,
    layer: SpikingNeurons,
    reset_loop: bool,
    scale: np.ndarray,
    dt: float,
) -> None:
    """The loops from the layer's spikes back into it: adaptation (ALIF), the reset, the recurrent weights."""
    np_dtype = _np(layer.weight_ih[:0]).dtype
    if layer.adaptive:
        tau_a, r_a = mapping.trace_to_nir(_np(layer.rho.to(torch.float64)), dt)
        nodes[f"{p}_adapt"] = nir.LI(
            tau=np.asarray(tau_a, dtype=np_dtype),
            r=np.asarray(r_a, dtype=np_dtype),
            v_leak=np.zeros(layer.hidden_size, dtype=np_dtype),
            metadata={"role": "adaptation"},
        )
        beta = -_np(layer.beta_adapt.to(layer.weight_ih.dtype))
        nodes[f"{p}_adapt_scale"] = nir.Scale(scale=beta, metadata={"role": "adaptation"})
        edges += [(spikes, f"{p}_adapt"), (f"{p}_adapt", f"{p}_adapt_scale"), (f"{p}_adapt_scale", spikes)]
    if reset_loop:
        thr = _np(layer.threshold.to(layer.weight_ih.dtype))
        nodes[f"{p}_reset"] = nir.Linear(weight=np.diag(-thr), metadata={"role": "reset"})
        edges += [(spikes, f"{p}_reset"), (f"{p}_reset", membrane)]
    w_rec = layer.recurrent_weight()
    if w_rec is not None:
        w_hh = scale[:, None] * _np(w_rec.to(torch.float64))
        nodes[f"{p}_rec"] = nir.Linear(weight=np.asarray(w_hh, dtype=np_dtype), metadata={"role": "recurrent"})
        edges += [(spikes, f"{p}_rec"), (f"{p}_rec", membrane)]


def _nest_recurrent(nir, nodes: dict, edges: list, p: str, spikes: str, h: int) -> str:
    """Move a recurrent LIF and its loop into a subgraph ``{p}_rleaky`` (input -> lif <-> w_rec, lif -> output),
    the layout snnTorch writes an RLeaky in. snnTorch 1.0's importer builds that subgraph itself from a flat
    loop, but feeds the layer's input through the loop's weights (its ``_create_rnn_subgraph`` edge input ->
    w_rec) and, with two recurrent layers, orders the subgraphs after the nodes they feed; a subgraph written
    here in graph order is read as it is."""
    rec = f"{p}_rec"
    sub = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([h])),
            "lif": nodes.pop(spikes),
            "w_rec": nodes.pop(rec),
            "output": nir.Output(np.array([h])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        type_check=False,
    )
    edges[:] = [(a, f"{p}_rleaky" if b == spikes else b) for a, b in edges if {a, b} != {spikes, rec}]
    nodes[f"{p}_rleaky"] = sub
    return f"{p}_rleaky"


def export_nir(
    model: nn.Module, sample: Tensor | None = None, dt: float | None = None, strict: bool = True, form: str = "nir"
):
    """Export a spikestab model to a ``nir.NIRGraph`` (needs the ``nir`` extra).

    ``model``: an SNNClassifier (layers, then its Affine readout, applied at every step), a SpikingStack,
    one LIF/ALIF/CubaLIF layer or cell, or an ``nn.Sequential`` of spikestab layers with an optional final
    ``nn.Linear`` readout. ``dt``: the length of one spikestab time step in NIR's time unit (tau_NIR = dt /
    (1 - alpha), r = tau_NIR / dt: one Euler step of NIR's equation is spikestab's step); default 1.0, or the
    step of the reader ``form`` names. ``form``: "nir" (any NIR reader), "snntorch" (``snntorch.import_nir``:
    LIF layers, one threshold per layer, dt 1e-4, recurrent layers as RLeaky subgraphs) or "norse"
    (``norse.torch.from_nir``: LIF layers with r moved into the weights, dt 1e-3, and CubaLIF layers); both
    readers reset to 0, so only "multiplicative" layers are exact there; docs/nir.md says what each runs.
    ``sample``: optional input, only checked for its width. ``strict``: refuse (ValueError) a layer the form
    cannot express exactly; with False it is exported in its nearest form, with the exact dynamics in
    metadata for import_nir. Dropout is not exported.
    """
    from . import require_nir

    nir = require_nir()
    if form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}, got {form!r}")
    dt = FORM_DT[form] if dt is None else dt
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0 (time per step), got {dt!r}")
    if form == "snntorch" and dt != mapping.SNNTORCH_DT:
        raise ValueError(
            f"dt must be {mapping.SNNTORCH_DT:g} for form='snntorch' (snnTorch 1.0's importer steps by "
            f"1e-4 whatever the graph says), got {dt!r}"
        )
    dt = float(dt)
    layers, readout, model_name = _layers_of(model)
    kinds = [_layer_name(layer, f"layer {i}") for i, layer in enumerate(layers)]
    _check_form(layers, kinds, form, strict)
    _check_sample(sample, layers[0].input_size)
    nodes: dict = {"input": nir.Input(input_type=np.array([layers[0].input_size]))}
    edges: list = []
    source, all_exact = "input", True
    digits = len(str(len(layers) - 1))  # zero-padded: the names sort in an order nirtorch evaluates rightly
    for i, (layer, kind) in enumerate(zip(layers, kinds)):
        source, exact = _add_layer(nir, nodes, edges, source, layer, i, digits, kind, dt, strict, form)
        all_exact = all_exact and exact
    width = layers[-1].hidden_size
    if readout is not None:
        bias = readout.bias if readout.bias is not None else torch.zeros_like(readout.weight[:, 0])
        nodes["readout"] = nir.Affine(weight=_np(readout.weight), bias=_np(bias), metadata={"role": "readout"})
        edges.append((source, "readout"))
        source, width = "readout", readout.out_features
    nodes["output"] = nir.Output(output_type=np.array([width]))
    edges.append((source, "output"))
    from .. import __version__

    meta = {
        "library": "spikestab",
        "spikestab_version": __version__,
        "model": model_name,
        "dt": dt,
        "nir_exact": all_exact,
        "form": form,
    }
    if isinstance(model, SNNClassifier):
        meta["config"] = json.dumps(model.config.to_dict(), default=str)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
