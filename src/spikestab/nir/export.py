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
from . import mapping

LAYER_TYPES = {"LIF": LIF, "ALIF": ALIF, "LIFCell": LIFCell, "ALIFCell": ALIFCell}

# (adaptive, reset) -> (neuron core, reset loop, exact in NIR). Core "lif": one nir.LIF node (reset to 0);
# "li": nir.LI membrane -> nir.Threshold; the reset loop is Threshold -> Linear(-diag threshold) -> LI.
STRUCTURE = {
    (False, "multiplicative"): ("lif", False, True),
    (False, "subtract"): ("li", True, True),
    (False, "none"): ("li", False, True),
    (False, "multiplicative_all"): ("lif", False, False),
    (True, "none"): ("li", False, True),
    (True, "subtract"): ("li", True, False),
    (True, "multiplicative"): ("li", False, False),
    (True, "multiplicative_all"): ("li", False, False),
}

APPROXIMATION = {
    (False, "multiplicative_all"): "a LIF that resets to 0 (spikestab also drops the input of the step after a spike)",
    (True, "subtract"): "an adaptive neuron that subtracts the fixed threshold, not A_t = threshold + beta_adapt a_t",
    (True, "multiplicative"): "an adaptive neuron without reset",
    (True, "multiplicative_all"): "an adaptive neuron without reset",
}


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _meta_value(t: Tensor) -> np.ndarray | float:
    """A tensor for metadata: a 0-d one as a float (HDF5 compresses arrays, and refuses that for scalars)."""
    return float(t.item()) if t.dim() == 0 else _np(t)


def _layers_of(model: nn.Module) -> tuple[list[SpikingNeurons], nn.Linear | None, str]:
    if isinstance(model, SNNLanguageModel):
        raise ValueError("model SNNLanguageModel is not supported: its embedding and tied output projection have "
                         "no NIR node (export model.stack instead)")
    if isinstance(model, SNNClassifier):
        return list(model.stack.layers), model.readout, "SNNClassifier"
    if isinstance(model, SpikingStack):
        return list(model.layers), None, "SpikingStack"
    if isinstance(model, SpikingNeurons):
        return [model], None, _layer_name(model, "model")
    raise ValueError(f"model must be a spikestab SNNClassifier, SpikingStack or LIF/ALIF layer or cell, got "
                     f"{type(model).__name__}")


def _layer_name(layer: nn.Module, where: str) -> str:
    for name, cls in LAYER_TYPES.items():
        if isinstance(layer, cls) and type(layer).adaptive == cls.adaptive:
            if layer.custom_current:
                raise ValueError(f"{where} ({type(layer).__name__}) overrides input_current, which NIR's Affine "
                                 "projection cannot express")
            return name
    raise ValueError(f"{where} must be a spikestab LIF, ALIF, LIFCell or ALIFCell, got {type(layer).__name__}")


def _check_sample(sample: Tensor | None, width: int) -> None:
    if sample is None:
        return
    if not isinstance(sample, Tensor):
        raise ValueError(f"sample must be a torch.Tensor or None, got {type(sample).__name__}")
    if sample.dim() == 0 or sample.shape[-1] != width:
        raise ValueError(f"sample must have last dimension input_size={width}, got shape {tuple(sample.shape)}")


def _layer_metadata(layer: SpikingNeurons, kind: str, exact: bool, dt: float) -> dict:
    sg = layer.spike_fn
    meta = {
        "library": "spikestab", "spikestab_layer": kind, "reset": layer.reset, "nir_exact": exact, "dt": dt,
        "detach_reset": layer.detach_reset, "recurrent": layer.recurrent,
        "recurrent_diagonal": bool(layer.recurrent and bool(layer.recurrent_mask.diagonal().all())),
        "bias": isinstance(layer.bias, nn.Parameter), "learn_tau": layer.tau.requires_grad,
        "learn_threshold": layer.threshold.requires_grad, "batch_first": layer.batch_first,
        "backend": layer.backend, "checkpoint": json.dumps(getattr(layer, "checkpoint", False)),
        "tau_steps": _np(layer.tau), "surrogate": sg.shape, "dampening": _meta_value(sg.dampening),
        "sharpness": _meta_value(sg.sharpness), "surrogate_learnable": isinstance(sg.dampening, nn.Parameter),
    }
    if sg.shape == "q-pseudospike":
        meta["tail"] = float(sg.tail)
    if layer.adaptive:
        meta["rho"] = _np(layer.rho)
        meta["beta_adapt"] = _np(layer.beta_adapt)
    return meta


def _add_layer(nir, nodes: dict, edges: list, source: str, layer: SpikingNeurons, i: int, digits: int, kind: str,
               dt: float, strict: bool) -> tuple[str, bool]:
    """Add layer i's nodes after ``source``; returns (name of the node that emits its spikes, exact)."""
    if layer.reset not in RESETS:
        raise ValueError(f"layer {i} ({kind}) has unknown reset {layer.reset!r}; expected one of {list(RESETS)}")
    core, reset_loop, exact = STRUCTURE[(layer.adaptive, layer.reset)]
    if not exact and strict:
        raise ValueError(
            f"layer {i} ({kind}, reset={layer.reset!r}) has no exact NIR equivalent; pass strict=False to export "
            f"it anyway: import_nir restores it exactly from metadata, other NIR readers see "
            f"{APPROXIMATION[(layer.adaptive, layer.reset)]}")
    p, spikes = f"layer{i:0{digits}d}", f"layer{i:0{digits}d}_spikes"
    dtype = layer.weight_ih.dtype
    np_dtype = _np(layer.weight_ih[:0]).dtype
    h = layer.hidden_size

    def arr(x) -> np.ndarray:
        return np.asarray(x, dtype=np_dtype)

    thr = _np(layer.threshold.to(dtype))
    tau, r = mapping.membrane_to_nir(_np(layer.alpha.to(torch.float64)), dt)
    zeros = np.zeros(h, dtype=np_dtype)
    nodes[f"{p}_input"] = nir.Affine(weight=_np(layer.weight_ih), bias=_np(layer.bias.to(dtype)),
                                     metadata={"role": "input"})
    edges.append((source, f"{p}_input"))
    if core == "lif":
        membrane = spikes
        nodes[spikes] = nir.LIF(tau=arr(tau), r=arr(r), v_leak=zeros, v_threshold=thr, v_reset=zeros.copy())
    else:
        membrane = f"{p}_membrane"
        nodes[membrane] = nir.LI(tau=arr(tau), r=arr(r), v_leak=zeros, metadata={"role": "membrane"})
        nodes[spikes] = nir.Threshold(threshold=thr)
        edges.append((membrane, spikes))
    edges.append((f"{p}_input", membrane))
    if layer.adaptive:
        tau_a, r_a = mapping.trace_to_nir(_np(layer.rho.to(torch.float64)), dt)
        nodes[f"{p}_adapt"] = nir.LI(tau=arr(tau_a), r=arr(r_a), v_leak=zeros.copy(), metadata={"role": "adaptation"})
        nodes[f"{p}_adapt_scale"] = nir.Scale(scale=-_np(layer.beta_adapt.to(dtype)), metadata={"role": "adaptation"})
        edges += [(spikes, f"{p}_adapt"), (f"{p}_adapt", f"{p}_adapt_scale"), (f"{p}_adapt_scale", spikes)]
    if reset_loop:
        nodes[f"{p}_reset"] = nir.Linear(weight=np.diag(-thr), metadata={"role": "reset"})
        edges += [(spikes, f"{p}_reset"), (f"{p}_reset", membrane)]
    if layer.recurrent:
        nodes[f"{p}_rec"] = nir.Linear(weight=_np(layer.recurrent_weight()), metadata={"role": "recurrent"})
        edges += [(spikes, f"{p}_rec"), (f"{p}_rec", membrane)]
    nodes[spikes].metadata = _layer_metadata(layer, kind, exact, dt)
    return spikes, exact


def export_nir(model: nn.Module, sample: Tensor | None = None, dt: float = 1.0, strict: bool = True):
    """Export a spikestab model to a ``nir.NIRGraph`` (needs the ``nir`` extra).

    ``model``: an SNNClassifier (layers, then its Affine readout, applied at every step), a SpikingStack,
    or one LIF/ALIF layer or cell. ``dt``: the length of one spikestab time step in NIR's time unit
    (tau_NIR = dt / (1 - alpha), r = tau_NIR / dt: one Euler step of NIR's equation is spikestab's
    step). ``sample``: optional input, only checked for its width (nothing is traced). ``strict``: refuse
    (ValueError) a layer NIR's nodes cannot express exactly (ALIF with a reset, multiplicative_all); with
    False it is exported as its nearest NIR form, with the exact dynamics in metadata for import_nir.
    Dropout is not exported (a NIR graph describes inference).
    """
    from . import require_nir

    nir = require_nir()
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0 (time per step), got {dt!r}")
    dt = float(dt)
    layers, readout, model_name = _layers_of(model)
    kinds = [_layer_name(layer, f"layer {i}") for i, layer in enumerate(layers)]
    _check_sample(sample, layers[0].input_size)
    nodes: dict = {"input": nir.Input(input_type=np.array([layers[0].input_size]))}
    edges: list = []
    source, all_exact = "input", True
    digits = len(str(len(layers) - 1))  # zero-padded: the names sort in an order nirtorch evaluates rightly
    for i, (layer, kind) in enumerate(zip(layers, kinds)):
        source, exact = _add_layer(nir, nodes, edges, source, layer, i, digits, kind, dt, strict)
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

    meta = {"library": "spikestab", "spikestab_version": __version__, "model": model_name, "dt": dt,
            "nir_exact": all_exact}
    if isinstance(model, SNNClassifier):
        meta["config"] = json.dumps(model.config.to_dict(), default=str)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
