"""NIR graph -> spikestab model (``import_nir``); the representation is described in docs/nir.md."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from ..dynamics import check_reset
from ..models import SNNClassifier, SNNConfig, SpikingStack
from ..neurons import ALIF, LIF, SpikingNeurons
from ..surrogate import SurrogateGradient
from . import mapping
from .export import LAYER_TYPES, STRUCTURE


def _meta(node) -> dict:
    meta = getattr(node, "metadata", None)
    return dict(meta) if isinstance(meta, dict) else {}


def _plain(value):
    """A metadata value as a plain Python object (HDF5 hands back numpy scalars and bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _get(meta: dict, key: str, default=None):
    return _plain(meta[key]) if key in meta else default


def _unsupported(name: str, node, wanted: str) -> ValueError:
    return ValueError(f"node {name!r} is a {type(node).__name__}, where spikestab reads {wanted}")


def _flatten(nir, graph, prefix: str = "") -> tuple[dict, list]:
    """Nodes and edges with nested NIRGraph nodes inlined (their Input/Output nodes removed)."""
    nodes: dict = {}
    edges: list = []
    entry: dict = {}
    exit_: dict = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten(nir, node, f"{prefix}{name}.")
            ins = {n for n, v in sub_nodes.items() if isinstance(v, nir.Input)}
            outs = {n for n, v in sub_nodes.items() if isinstance(v, nir.Output)}
            entry[name] = [b for a, b in sub_edges if a in ins and b not in outs]
            exit_[name] = [a for a, b in sub_edges if b in outs and a not in ins]
            nodes.update({n: v for n, v in sub_nodes.items() if n not in ins | outs})
            edges += [(a, b) for a, b in sub_edges if a not in ins | outs and b not in ins | outs]
        else:
            nodes[prefix + name] = node
    for a, b in graph.edges:
        for src in exit_.get(a, [prefix + a]):
            for dst in entry.get(b, [prefix + b]):
                if (src, dst) not in edges:
                    edges.append((src, dst))
    return nodes, edges


def _parse_neuron(nir, nodes: dict, succ: dict, pred: dict, proj: str, m: str) -> dict:
    """The nodes of the neuron whose membrane ``m`` the projection ``proj`` feeds."""
    node = nodes[m]
    if isinstance(node, nir.LIF):
        core, spike = "lif", m
    elif isinstance(node, nir.LI):
        outs = succ[m]
        if len(outs) != 1 or not isinstance(nodes[outs[0]], nir.Threshold):
            raise ValueError(f"node {m!r} (LI) must feed exactly one Threshold node, its spikes; it feeds {outs}")
        core, spike = "li", outs[0]
    else:
        raise _unsupported(m, node, "a neuron (LIF, or LI followed by Threshold)")
    spec = {"core": core, "proj": proj, "membrane": m, "spike": spike, "loops": [], "adapt": None}
    internal = {m, spike}
    for q in pred[m]:
        if q == proj:
            continue
        qn = nodes[q]
        if not isinstance(qn, (nir.Linear, nir.Affine)) or pred[q] != [spike] or succ[q] != [m]:
            raise ValueError(f"node {q!r} ({type(qn).__name__}) feeds the membrane {m!r} but is not a Linear from "
                             f"the spikes of {spike!r} (the only recurrent loop spikestab reads)")
        if isinstance(qn, nir.Affine) and np.any(np.asarray(qn.bias) != 0):
            raise ValueError(f"node {q!r}: a bias in a recurrent loop has no spikestab equivalent")
        spec["loops"].append(q)
        internal.add(q)
    if core == "li":
        extra = [q for q in pred[spike] if q != m]
        if extra:
            c = extra[0]
            a = pred[c][0] if len(pred[c]) == 1 else None
            if (len(extra) != 1 or not isinstance(nodes[c], nir.Scale) or a is None
                    or not isinstance(nodes[a], nir.LI) or pred[a] != [spike] or succ[a] != [c] or succ[c] != [spike]):
                raise ValueError(f"Threshold node {spike!r} has inputs {pred[spike]}: spikestab reads the membrane "
                                 "alone, or with an adaptation LI (fed by the spikes) through a Scale")
            spec["adapt"] = (a, c)
            internal |= {a, c}
    spec["internal"] = internal
    return spec


def _parse(nir, nodes: dict, edges: list) -> tuple[list[dict], str | None, int]:
    succ: dict = defaultdict(list)
    pred: dict = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"the graph must have one Input and one Output node, got inputs {inputs}, outputs {outputs}")
    shape = np.asarray(nodes[inputs[0]].input_type["input"]).reshape(-1)
    if shape.size != 1:
        raise ValueError(f"the Input node must have a flat shape [N] (spikestab layers are fully connected), "
                         f"got {shape}")
    specs: list[dict] = []
    seen = {inputs[0], outputs[0]}
    cur, internal, readout = inputs[0], set(), None
    while True:
        nxt = [n for n in succ[cur] if n not in internal]
        if len(nxt) != 1:
            raise ValueError(f"node {cur!r} must feed exactly one node onward (a projection or the Output), "
                             f"feeds {nxt}")
        n = nxt[0]
        if n == outputs[0]:
            break
        if not isinstance(nodes[n], (nir.Affine, nir.Linear)):
            raise _unsupported(n, nodes[n], "a projection (Affine or Linear)")
        if pred[n] != [cur] or len(succ[n]) != 1:
            raise ValueError(f"projection {n!r} must have one input and one output edge, has {pred[n]} -> {succ[n]}")
        seen.add(n)
        if succ[n][0] == outputs[0]:
            if not specs:
                raise ValueError("the graph has no spiking layer (LIF, or LI -> Threshold) before its Output")
            readout = n
            break
        spec = _parse_neuron(nir, nodes, succ, pred, n, succ[n][0])
        specs.append(spec)
        seen |= spec["internal"]
        cur, internal = spec["spike"], spec["internal"]
    if not specs:
        raise ValueError("the graph has no spiking layer (LIF, or LI -> Threshold) before its Output")
    left = sorted(set(nodes) - seen)
    if left:
        raise ValueError(f"nodes {left} are not on the chain Input -> [projection -> neuron]* -> [readout] -> Output "
                         "that spikestab reads")
    return specs, readout, int(shape[0])


def _weights(node, hidden: int | None, width: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(node.weight, dtype=np.float64)
    rows = w.shape[0] if hidden is None else hidden
    if w.shape != (rows, width):
        raise ValueError(f"node {name!r}: weight must have shape ({rows}, {width}), got {w.shape}")
    bias = np.asarray(getattr(node, "bias", np.zeros(rows)), dtype=np.float64)
    if bias.shape != (rows,):
        raise ValueError(f"node {name!r}: bias must have shape ({rows},), got {bias.shape}")
    return w, bias


def _per_neuron(value, hidden: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (hidden,):
        if arr.size == 1:
            return np.full(hidden, float(arr.reshape(-1)[0]))
        raise ValueError(f"node {name!r}: parameters must have shape ({hidden},), got {arr.shape}")
    return arr


def _choose_reset(spec: dict, meta: dict, adaptive: bool, reset_loop: bool) -> str:
    structure = (spec["core"], reset_loop)
    allowed = [r for (ad, r), (core, loop, _) in STRUCTURE.items() if ad == adaptive and (core, loop) == structure]
    loop = "with" if reset_loop else "without"
    described = f"{'an adaptive' if adaptive else 'a'} {spec['core'].upper()} core {loop} reset loop"
    if "reset" in meta:
        reset = check_reset(str(_get(meta, "reset")))
        if reset not in allowed:
            raise ValueError(f"node {spec['spike']!r}: metadata reset={reset!r} does not match the graph ({described})")
        return reset
    exact = [r for r in allowed if STRUCTURE[(adaptive, r)][2]]
    if not exact:
        raise ValueError(f"node {spec['spike']!r}: {described} has no spikestab equivalent (spikestab's ALIF subtracts "
                         "the adaptive threshold, not the fixed one; metadata reset= can declare spikestab's dynamics)")
    return exact[0]


def _flag(meta: dict, key: str, default: bool) -> bool:
    return bool(_get(meta, key, default))


def _spike_fn(meta: dict) -> SurrogateGradient:
    shape = str(_get(meta, "surrogate", "fast-sigmoid"))
    tail = _get(meta, "tail") if "tail" in meta else None
    dampening, sharpness = (torch.as_tensor(np.asarray(meta.get(k, 1.0), dtype=np.float32))
                            for k in ("dampening", "sharpness"))
    return SurrogateGradient(shape, dampening, sharpness, None if tail is None else float(tail),
                             learnable=_flag(meta, "surrogate_learnable", False))


def _euler(node, name: str, hidden: int, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return mapping.euler_from_nir(_per_neuron(node.tau, hidden, name), _per_neuron(node.r, hidden, name),
                                  _per_neuron(node.v_leak, hidden, name), dt, name)


def _build_layer(nir, nodes: dict, spec: dict, width: int, dt: float) -> SpikingNeurons:
    spike, mem_name = spec["spike"], spec["membrane"]
    meta, mem = _meta(nodes[spike]), nodes[mem_name]
    thr_raw = mem.v_threshold if spec["core"] == "lif" else nodes[spike].threshold
    hidden = int(np.asarray(thr_raw).size)
    thr = _per_neuron(thr_raw, hidden, spike)
    w_ih, bias = _weights(nodes[spec["proj"]], hidden, width, spec["proj"])
    decay, gain, drift = _euler(mem, mem_name, hidden, dt)
    if spec["core"] == "lif" and np.any(_per_neuron(mem.v_reset, hidden, mem_name) != 0):
        raise ValueError(f"node {mem_name!r}: v_reset must be 0 (spikestab resets to 0 or subtracts), got "
                         f"{np.asarray(mem.v_reset).reshape(-1)[:4]}...")
    w_ih, bias = gain[:, None] * w_ih, gain * bias + drift
    rec = reset = None
    for q in spec["loops"]:
        w = gain[:, None] * _weights(nodes[q], hidden, hidden, q)[0]
        role = _get(_meta(nodes[q]), "role")
        is_reset = spec["core"] == "li" and role != "recurrent" and np.array_equal(w, np.diag(-thr))
        if is_reset and reset is None:
            reset = w
        else:
            rec = w if rec is None else rec + w
    adaptive = spec["adapt"] is not None
    kind = str(_get(meta, "spikestab_layer", "ALIF" if adaptive else "LIF"))
    if kind not in LAYER_TYPES or LAYER_TYPES[kind].adaptive != adaptive:
        raise ValueError(f"node {spike!r}: metadata spikestab_layer={kind!r} is not a spikestab layer matching the "
                         f"graph ({'adaptive' if adaptive else 'not adaptive'}); expected one of {sorted(LAYER_TYPES)}")
    cls = LAYER_TYPES[kind]
    reset_name = _choose_reset(spec, meta, adaptive, reset is not None)
    tau = mapping.prefer(meta.get("tau_steps"), mapping.steps_from_decay(decay))
    recurrent = rec is not None or bool(_get(meta, "recurrent", False))
    rec = np.zeros((hidden, hidden)) if rec is None else rec
    kw = dict(recurrent=recurrent, tau=torch.tensor(tau, dtype=torch.float32),
              threshold=torch.tensor(thr, dtype=torch.float32), reset=reset_name,
              detach_reset=_flag(meta, "detach_reset", True), spike_fn=_spike_fn(meta),
              bias=_flag(meta, "bias", bool(np.any(bias != 0))), batch_first=_flag(meta, "batch_first", False),
              learn_tau=_flag(meta, "learn_tau", False), learn_threshold=_flag(meta, "learn_threshold", False),
              recurrent_diagonal=_flag(meta, "recurrent_diagonal", False) or bool(np.any(np.diag(rec) != 0)),
              backend=str(_get(meta, "backend", "auto")))
    if cls in (LIF, ALIF):
        kw["checkpoint"] = json.loads(str(_get(meta, "checkpoint", "false")))
    rho = None
    if adaptive:
        a_name, c_name = spec["adapt"]
        decay_a, gain_a, drift_a = _euler(nodes[a_name], a_name, hidden, dt)
        if np.any(drift_a != 0):
            raise ValueError(f"node {a_name!r}: v_leak must be 0 for an adaptation trace")
        beta = -_per_neuron(nodes[c_name].scale, hidden, c_name) * mapping.snap_unit(gain_a / (1.0 - decay_a))
        rho = mapping.prefer(meta.get("rho"), decay_a)
        beta = mapping.prefer(meta.get("beta_adapt"), beta)
        kw.update(tau_adapt=torch.tensor(mapping.steps_from_decay(rho), dtype=torch.float32),
                  beta_adapt=torch.tensor(beta, dtype=torch.float32))
    try:
        layer = cls(width, hidden, **kw)
    except ValueError as err:
        raise ValueError(f"node {spike!r}: {err}") from err
    dtype = torch.float64 if np.asarray(nodes[spec["proj"]].weight).dtype == np.float64 else torch.float32
    layer.to(dtype)
    with torch.no_grad():
        layer.weight_ih.copy_(torch.from_numpy(w_ih))
        layer.bias.copy_(torch.from_numpy(bias))
        layer.tau.copy_(torch.from_numpy(tau))  # exact: the constructor's exp/log round trip may move an ulp
        if layer.weight_hh is not None:
            layer.weight_hh.copy_(torch.from_numpy(rec))
        if rho is not None:
            layer.rho.copy_(torch.from_numpy(rho))
    return layer


def _config(gmeta: dict, layers: list[SpikingNeurons], input_size: int, output_size: int) -> SNNConfig:
    sizes = {"input_size": input_size, "output_size": output_size,
             "hidden_sizes": tuple(layer.hidden_size for layer in layers)}
    if "config" in gmeta:
        try:
            stored = json.loads(str(_get(gmeta, "config")))
            names = {f.name for f in dataclasses.fields(SNNConfig)}
            return SNNConfig(**{**{k: v for k, v in stored.items() if k in names}, **sizes})
        except (TypeError, ValueError, AttributeError):
            pass
    first = layers[0]
    sg = first.spike_fn
    kw = dict(net="alif" if first.adaptive else "lif", dropout=0.0, recurrent=first.recurrent,
              tau=float(first.tau.mean()), threshold=float(first.threshold.mean()), reset=first.reset,
              detach_reset=first.detach_reset, surrogate=sg.shape, dampening=float(sg.dampening.mean()),
              sharpness=float(sg.sharpness.mean()), tail=sg.tail if sg.shape == "q-pseudospike" else None,
              bias=isinstance(first.bias, nn.Parameter))
    if first.adaptive:
        kw.update(tau_adapt=float((-1.0 / torch.log(first.rho)).mean()), beta_adapt=float(first.beta_adapt.mean()))
    return SNNConfig(**sizes, **kw)


def import_nir(graph, dt: float | None = None) -> nn.Module:
    """Build a spikestab model from a ``nir.NIRGraph`` (or the path of a NIR HDF5 file); needs the ``nir`` extra.

    Reads the chain Input -> [Affine/Linear -> neuron]* -> [Affine readout] -> Output, where a neuron is
    an LIF node (reset to 0: spikestab's "multiplicative") or LI -> Threshold (no reset, or "subtract" with
    a Threshold -> Linear(-diag threshold) -> LI loop), optionally with other Linear loops (recurrent
    weights) and an adaptation LI -> Scale into the Threshold (ALIF); nested graphs are inlined. Returns an
    SNNClassifier when there is a readout, else the single layer, else a SpikingStack, in eval mode.
    ``dt`` (default: the graph's metadata "dt", else 1.0) is the NIR time of one spikestab step. spikestab's
    metadata (surrogate gradient, exact tau/rho, non-NIR resets) is used where it agrees with the graph.
    ValueError names the node or setting it cannot read.
    """
    from . import require_nir

    nir = require_nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"graph must be a nir.NIRGraph or the path of a NIR file, got {type(graph).__name__}")
    gmeta = _meta(graph)
    dt = _get(gmeta, "dt", 1.0) if dt is None else dt
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0 (NIR time per step), got {dt!r}")
    nodes, edges = _flatten(nir, graph)
    specs, readout, width = _parse(nir, nodes, edges)
    layers = []
    for spec in specs:
        layers.append(_build_layer(nir, nodes, spec, width, float(dt)))
        width = layers[-1].hidden_size
    name = str(_get(gmeta, "model", ""))
    if readout is not None:
        w, b = _weights(nodes[readout], None, width, readout)
        model = SNNClassifier(_config(gmeta, layers, layers[0].input_size, w.shape[0]))
        model.stack.layers = nn.ModuleList(layers)
        model.readout = nn.Linear(width, w.shape[0]).to(layers[-1].weight_ih.dtype)
        with torch.no_grad():
            model.readout.weight.copy_(torch.from_numpy(w))
            model.readout.bias.copy_(torch.from_numpy(b))
    elif len(layers) == 1 and name != "SpikingStack":
        model = layers[0]
    else:
        model = SpikingStack(_config(gmeta, layers, layers[0].input_size, width), layers[0].input_size)
        model.layers = nn.ModuleList(layers)
    return model.eval()
