"""NIR graph -> spikestab model (``import_nir``); the representation is described in docs/nir.md."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from ..dynamics import RESETS, check_reset
from ..models import SNNClassifier, SNNConfig, SpikingStack
from ..neurons import ALIF, LIF, SpikingNeurons
from ..neurons.cuba import CubaLIF
from ..surrogate import SurrogateGradient, from_norse, from_snntorch
from . import mapping
from .export import FAMILY, LAYER_TYPES, STRUCTURE


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
    elif isinstance(node, nir.CubaLIF):
        core, spike = "cuba", m
    elif isinstance(node, nir.LI):
        outs = succ[m]
        if len(outs) != 1 or not isinstance(nodes[outs[0]], nir.Threshold):
            raise ValueError(f"node {m!r} (LI) must feed exactly one Threshold node, its spikes; it feeds {outs}")
        core, spike = "li", outs[0]
    else:
        raise _unsupported(m, node, "a neuron (LIF, CubaLIF, or LI followed by Threshold)")
    spec: dict[str, Any] = {"core": core, "proj": proj, "membrane": m, "spike": spike, "loops": [], "adapt": None}
    internal = {m, spike}
    for q in pred[m]:
        if q == proj:
            continue
        qn = nodes[q]
        if not isinstance(qn, (nir.Linear, nir.Affine)) or pred[q] != [spike] or succ[q] != [m]:
            raise ValueError(
                f"node {q!r} ({type(qn).__name__}) feeds the membrane {m!r} but is not a Linear or "
                f"Affine from the spikes of {spike!r} (the only recurrent loop spikestab reads)"
            )
        spec["loops"].append(q)
        internal.add(q)
    if core == "li":
        extra = [q for q in pred[spike] if q != m]
        if extra:
            c = extra[0]
            a = pred[c][0] if len(pred[c]) == 1 else None
            if (
                len(extra) != 1
                or not isinstance(nodes[c], nir.Scale)
                or a is None
                or not isinstance(nodes[a], nir.LI)
                or pred[a] != [spike]
                or succ[a] != [c]
                or succ[c] != [spike]
            ):
                raise ValueError(
                    f"Threshold node {spike!r} has inputs {pred[spike]}: spikestab reads the membrane "
                    "alone, or with an adaptation LI (fed by the spikes) through a Scale"
                )
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
    if shape.size < 1:
        raise ValueError(
            f"the Input node must have a shape [..., N] (spikestab layers are fully connected; leading "
            f"batch or time dimensions that exporters copy from their sample are ignored), got {shape}"
        )
    specs: list[dict] = []
    seen = {inputs[0], outputs[0]}
    cur, internal, readout = inputs[0], set(), None
    while True:
        nxt = [n for n in succ[cur] if n not in internal]
        if len(nxt) != 1:
            raise ValueError(
                f"node {cur!r} must feed exactly one node onward (a projection or the Output), feeds {nxt}"
            )
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
                raise ValueError("the graph has no spiking layer (LIF, CubaLIF, or LI -> Threshold) before its Output")
            readout = n
            break
        spec = _parse_neuron(nir, nodes, succ, pred, n, succ[n][0])
        specs.append(spec)
        seen |= spec["internal"]
        cur, internal = spec["spike"], spec["internal"]
    if not specs:
        raise ValueError("the graph has no spiking layer (LIF, CubaLIF, or LI -> Threshold) before its Output")
    left = sorted(set(nodes) - seen)
    if left:
        raise ValueError(
            f"nodes {left} are not on the chain Input -> [projection -> neuron]* -> [readout] -> Output "
            "that spikestab reads"
        )
    return specs, readout, int(shape[-1])


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


def _choose_reset(spec: dict, meta: dict, family: str, reset_loop: bool, requested: str | None) -> str:
    """The layer's spikestab reset: ``requested`` (import_nir's ``reset=``, for LIF and CubaLIF nodes), else
    the metadata's, else the one exact reading of the graph's structure."""
    spike = spec["spike"]
    if spec["core"] in ("lif", "cuba") and _get(meta, "form", "nir") != "nir":
        if _get(meta, "norse_reset_method") == "reset_subtract":
            raise ValueError(
                f"node {spike!r} was written for Norse's from_nir with reset_method=reset_subtract "
                "(export_nir form='norse'); export with form='nir' for import_nir"
            )
        reset = check_reset(str(_get(meta, "reset", "multiplicative")))
        if requested is not None and requested != reset:
            raise ValueError(f"node {spike!r}: reset={requested!r} contradicts the graph's metadata reset={reset!r}")
        return reset
    if requested is not None:
        if spec["core"] not in ("lif", "cuba"):
            raise ValueError(
                f"node {spike!r}: reset= applies to layers read from NIR LIF and CubaLIF nodes; this "
                "layer is an LI -> Threshold whose reset the graph states"
            )
        if "reset" in meta and check_reset(str(_get(meta, "reset"))) != requested:
            raise ValueError(
                f"node {spike!r}: reset={requested!r} contradicts the graph's metadata reset={_get(meta, 'reset')!r}"
            )
        return requested
    structure = (spec["core"], reset_loop)
    allowed = [r for (fam, r), (core, loop, _) in STRUCTURE.items() if fam == family and (core, loop) == structure]
    loop = "with" if reset_loop else "without"
    described = f"{'an adaptive' if family == 'alif' else 'a'} {spec['core'].upper()} core {loop} reset loop"
    if "reset" in meta:
        reset = check_reset(str(_get(meta, "reset")))
        if reset not in allowed:
            raise ValueError(f"node {spike!r}: metadata reset={reset!r} does not match the graph ({described})")
        return reset
    exact = [r for r in allowed if STRUCTURE[(family, r)][2]]
    if not exact:
        raise ValueError(
            f"node {spike!r}: {described} has no spikestab equivalent (spikestab's ALIF subtracts "
            "the adaptive threshold, not the fixed one; metadata reset= can declare spikestab's dynamics)"
        )
    return exact[0]


def _flag(meta: dict, key: str, default: bool) -> bool:
    return bool(_get(meta, key, default))


def _spike_fn(meta: dict, default: SurrogateGradient) -> SurrogateGradient:
    """The metadata's surrogate gradient, else a copy of ``default`` (NIR does not carry one)."""
    if "surrogate" not in meta:
        return default.with_params()
    shape = str(_get(meta, "surrogate"))
    tail = _get(meta, "tail") if "tail" in meta else None
    dampening, sharpness = (
        torch.as_tensor(np.asarray(meta.get(k, 1.0), dtype=np.float32)) for k in ("dampening", "sharpness")
    )
    return SurrogateGradient(
        shape,
        dampening,
        sharpness,
        None if tail is None else float(tail),
        learnable=_flag(meta, "surrogate_learnable", False),
    )


def _euler(node, name: str, hidden: int, dt: float, tau_attr: str = "tau") -> tuple[np.ndarray, ...]:
    return mapping.euler_from_nir(
        _per_neuron(getattr(node, tau_attr), hidden, name),
        _per_neuron(node.r, hidden, name),
        _per_neuron(node.v_leak, hidden, name),
        dt,
        name,
    )


def _layer_kind(spec: dict, meta: dict) -> str:
    family = "alif" if spec["adapt"] is not None else ("cuba" if spec["core"] == "cuba" else "lif")
    kind = str(_get(meta, "spikestab_layer", {"alif": "ALIF", "cuba": "CubaLIF", "lif": "LIF"}[family]))
    if kind not in LAYER_TYPES or FAMILY[kind] != family:
        raise ValueError(
            f"node {spec['spike']!r}: metadata spikestab_layer={kind!r} is not a spikestab layer matching "
            f"the graph ({family}); expected one of {sorted(LAYER_TYPES)}"
        )
    return kind


def _build_layer(nir, nodes: dict, spec: dict, width: int, dt: float, reading: dict) -> SpikingNeurons:
    """The spikestab layer of one parsed neuron; ``reading``: the source's conventions (import_nir)."""
    spike, mem_name = spec["spike"], spec["membrane"]
    meta, mem = _meta(nodes[spike]), nodes[mem_name]
    w_ih, bias = _weights(nodes[spec["proj"]], None, width, spec["proj"])
    hidden = w_ih.shape[0]  # a scalar threshold or tau (Norse writes them so) is shared by the layer's neurons
    thr = _per_neuron(mem.v_threshold if spec["core"] != "li" else nodes[spike].threshold, hidden, spike)
    decay, gain, drift, tau_syn = _membrane(mem, mem_name, spec["core"], meta, hidden, dt, reading)
    w_ih, bias = gain[:, None] * w_ih, gain * bias + drift
    rec, reset, bias = _loops(nodes, spec, hidden, gain, thr, bias)
    kind = _layer_kind(spec, meta)
    family = FAMILY[kind]
    requested = reading["reset"](spec, rec is not None, meta)
    reset_name = _choose_reset(spec, meta, family, reset is not None, requested)
    tau = mapping.prefer(meta.get("tau_steps"), mapping.steps_from_decay(decay))
    recurrent = rec is not None or bool(_get(meta, "recurrent", False))
    rec = np.zeros((hidden, hidden)) if rec is None else rec
    kw: dict[str, Any] = dict(
        recurrent=recurrent,
        tau=torch.tensor(tau, dtype=torch.float32),
        threshold=torch.tensor(thr, dtype=torch.float32),
        reset=reset_name,
        detach_reset=_flag(meta, "detach_reset", True),
        spike_fn=_spike_fn(meta, reading["surrogate"]),
        bias=_flag(meta, "bias", bool(np.any(bias != 0))),
        batch_first=_flag(meta, "batch_first", False),
        learn_tau=_flag(meta, "learn_tau", False),
        learn_threshold=_flag(meta, "learn_threshold", False),
        recurrent_diagonal=_flag(meta, "recurrent_diagonal", False) or bool(np.any(np.diag(rec) != 0)),
        backend=str(_get(meta, "backend", "auto")),
    )
    cls = LAYER_TYPES[kind]
    if cls in (LIF, ALIF):
        kw["checkpoint"] = json.loads(str(_get(meta, "checkpoint", "false")))
    if tau_syn is not None:
        kw.update(tau_syn=torch.tensor(tau_syn, dtype=torch.float32), learn_tau_syn=_flag(meta, "learn_tau_syn", False))
    rho = None
    if family == "alif":
        rho, beta = _adaptation(nodes, spec["adapt"], meta, hidden, dt)
        kw.update(
            tau_adapt=torch.tensor(mapping.steps_from_decay(rho), dtype=torch.float32),
            beta_adapt=torch.tensor(beta, dtype=torch.float32),
        )
    try:
        layer = cls(width, hidden, **kw)
    except ValueError as err:
        raise ValueError(f"node {spike!r}: {err}") from err
    dtype = torch.float64 if np.asarray(nodes[spec["proj"]].weight).dtype == np.float64 else torch.float32
    layer.to(dtype)
    _fill(layer, w_ih, bias, tau, rec, rho, tau_syn)
    return layer


def _membrane(mem, mem_name: str, core: str, meta: dict, hidden: int, dt: float, reading: dict) -> tuple:
    """The membrane node's per-step (decay, input gain, constant drift) and, for a CubaLIF, its synaptic time
    constant in steps (None otherwise); ValueError for what spikestab's layers cannot hold (a drift on a
    CubaLIF, a reset to anything but 0)."""
    tau_syn = None
    if core == "cuba":
        decay, gain, drift = _euler(mem, mem_name, hidden, dt, "tau_mem")
        if np.any(drift != 0):
            raise ValueError(
                f"node {mem_name!r}: v_leak must be 0 for a CubaLIF (spikestab's CUBA layer has no "
                "constant drive on its membrane)"
            )
        decay_s, gain_s = mapping.synapse_from_nir(
            _per_neuron(mem.tau_syn, hidden, mem_name),
            _per_neuron(mem.w_in, hidden, mem_name),
            dt,
            mem_name,
            reading["unscaled_synapse"],
        )
        gain = mapping.snap_unit(gain * gain_s)
        tau_syn = mapping.prefer(meta.get("tau_syn_steps"), mapping.steps_from_decay(decay_s))
    else:
        decay, gain, drift = _euler(mem, mem_name, hidden, dt)
    if core != "li" and np.any(_per_neuron(mem.v_reset, hidden, mem_name) != 0):
        raise ValueError(
            f"node {mem_name!r}: v_reset must be 0 (spikestab resets to 0 or subtracts), got "
            f"{np.asarray(mem.v_reset).reshape(-1)[:4]}..."
        )
    return decay, gain, drift, tau_syn


def _loops(nodes: dict, spec: dict, hidden: int, gain: np.ndarray, thr: np.ndarray, bias: np.ndarray) -> tuple:
    """The layer's loops from its spikes back to its membrane, scaled by the membrane's input ``gain``:
    (recurrent weights or None, the reset loop's weights or None, ``bias`` plus the loops' biases)."""
    rec = reset = None
    for q in spec["loops"]:
        w, b = _weights(nodes[q], hidden, hidden, q)
        w = gain[:, None] * w
        bias = bias + gain * b  # a loop's bias acts at every step, as the layer's own bias does
        role = _get(_meta(nodes[q]), "role")
        is_reset = spec["core"] == "li" and role != "recurrent" and np.array_equal(w, np.diag(-thr))
        if is_reset and reset is None:
            reset = w
        else:
            rec = w if rec is None else rec + w
    return rec, reset, bias


def _adaptation(nodes: dict, names: tuple[str, str], meta: dict, hidden: int, dt: float) -> tuple:
    """An ALIF's adaptation (rho, beta) from its trace node and scale node ``names``."""
    a_name, c_name = names
    decay_a, gain_a, drift_a = _euler(nodes[a_name], a_name, hidden, dt)
    if np.any(drift_a != 0):
        raise ValueError(f"node {a_name!r}: v_leak must be 0 for an adaptation trace")
    beta = -_per_neuron(nodes[c_name].scale, hidden, c_name) * mapping.snap_unit(gain_a / (1.0 - decay_a))
    return mapping.prefer(meta.get("rho"), decay_a), mapping.prefer(meta.get("beta_adapt"), beta)


def _fill(layer: SpikingNeurons, w_ih, bias, tau, rec, rho, tau_syn) -> None:
    """Copy the read values into the built layer exactly (the constructor's exp/log round trip of tau may
    move an ulp)."""
    with torch.no_grad():
        layer.weight_ih.copy_(torch.from_numpy(w_ih))
        layer.bias.copy_(torch.from_numpy(bias))
        layer.tau.copy_(torch.from_numpy(tau))
        if layer.weight_hh is not None:
            layer.weight_hh.copy_(torch.from_numpy(rec))
        if rho is not None:
            layer.rho.copy_(torch.from_numpy(rho))
        if tau_syn is not None:
            if not isinstance(layer, CubaLIF):
                raise ValueError(f"synaptic time constants were read for a {type(layer).__name__}, which has none")
            layer.tau_syn.copy_(torch.from_numpy(tau_syn))


def _config(gmeta: dict, layers: list[SpikingNeurons], input_size: int, output_size: int) -> SNNConfig:
    sizes: dict[str, Any] = {
        "input_size": input_size,
        "output_size": output_size,
        "hidden_sizes": tuple(layer.hidden_size for layer in layers),
    }
    if "config" in gmeta:
        try:
            stored = json.loads(str(_get(gmeta, "config")))
            names = {f.name for f in dataclasses.fields(SNNConfig)}
            return SNNConfig(**{**{k: v for k, v in stored.items() if k in names}, **sizes})
        except (TypeError, ValueError, AttributeError):
            pass
    first = layers[0]
    sg = first.spike_fn
    net = "alif" if first.adaptive else ("cuba" if isinstance(first, CubaLIF) else "lif")
    kw: dict[str, Any] = dict(
        net=net,
        dropout=0.0,
        recurrent=first.recurrent,
        tau=float(first.tau.mean()),
        threshold=float(first.threshold.mean()),
        reset=first.reset,
        detach_reset=first.detach_reset,
        surrogate=sg.shape,
        dampening=float(sg.dampening.mean()),
        sharpness=float(sg.sharpness.mean()),
        tail=sg.tail if sg.shape == "q-pseudospike" else None,
        bias=isinstance(first.bias, nn.Parameter),
    )
    if first.adaptive:
        kw.update(tau_adapt=float((-1.0 / torch.log(first.rho)).mean()), beta_adapt=float(first.beta_adapt.mean()))
    return SNNConfig(**sizes, **kw)


# The surrogate gradient of a layer whose graph has none in its metadata: that of the writer's default neuron
# (snnTorch's atan(alpha=2), Norse's SuperSpike), spikestab's default fast-sigmoid otherwise.
SOURCE_SURROGATE = {
    "nir": SurrogateGradient,
    "snntorch": lambda: from_snntorch("atan", alpha=2.0),
    "norse": lambda: from_norse("super"),
}


def _reset_reader(source: str, reset, n_layers: int):
    """``reset`` of import_nir as a function (parsed neuron, has a recurrent loop, metadata) -> spikestab
    reset or None; with source "snntorch", a layer without a metadata reset defaults to snnTorch's default."""
    names = list(mapping.SNNTORCH_RESETS) if source == "snntorch" else list(RESETS)
    what = "snnTorch's reset_mechanism" if source == "snntorch" else "a spikestab reset"
    per_layer = [reset] * n_layers if reset is None or isinstance(reset, str) else list(reset)
    if len(per_layer) != n_layers:
        raise ValueError(f"reset must be one name or one per spiking layer ({n_layers}), got {len(per_layer)}")
    for name in per_layer:
        if name is not None and name not in names:
            raise ValueError(f"reset must be {what}, one of {names} (or None), got {name!r}")
    layers = iter(per_layer)

    def read(spec: dict, recurrent: bool, meta: dict) -> str | None:
        name = next(layers)
        if name is None and source == "snntorch" and "reset" not in meta:
            name = "subtract"  # snnTorch's default reset_mechanism, which its exporter does not write
        if name is None or source != "snntorch":
            return name
        if spec["core"] != "lif":
            raise ValueError(
                f"node {spec['spike']!r}: source='snntorch' reads LIF nodes (Leaky, RLeaky), not "
                f"{spec['core'].upper()} neurons"
            )
        return mapping.SNNTORCH_RESETS[name][recurrent]

    return read


def import_nir(graph, dt: float | None = None, source: str = "nir", reset=None) -> nn.Module:
    """Build a spikestab model from a ``nir.NIRGraph`` (or the path of a NIR HDF5 file); needs the ``nir`` extra.

    Reads the chain Input -> [Affine/Linear -> neuron]* -> [Affine readout] -> Output, where a neuron is
    an LIF node (reset to 0: spikestab's "multiplicative"), a CubaLIF node (spikestab's CubaLIF) or LI ->
    Threshold (no reset, or "subtract" with a Threshold -> Linear(-diag threshold) -> LI loop), optionally with
    other Linear/Affine loops (recurrent weights; a loop's bias joins the layer's bias) and an adaptation LI ->
    Scale into the Threshold (ALIF); nested graphs are inlined. Returns an SNNClassifier when there is a
    readout, else the single layer, else a SpikingStack, in eval mode.

    ``source``: who wrote the graph: "nir" (any NIR writer, read by Euler steps), "snntorch" (snnTorch 1.0's
    export_to_nir) or "norse" (Norse 1.1's to_nir, whose CubaLIF adds its input to the current unscaled).
    ``dt``: the NIR time of one spikestab step; default: the graph's metadata "dt", else the source's step
    (``mapping.SOURCE_DT``: 1.0, 1e-4, 1e-6). ``reset``: the reset of layers read from LIF/CubaLIF nodes, one
    name or one per layer (None: as the graph says); with source="snntorch" it is snnTorch's reset_mechanism
    ("subtract", its default and the default here, "zero" or "none"), mapped per Leaky/RLeaky as docs/nir.md
    says. spikestab's metadata (surrogate gradient, exact tau/rho, non-NIR resets) is used where it agrees
    with the graph; without it a layer gets the surrogate gradient of the source's default neuron
    (``SOURCE_SURROGATE``). ValueError names the node or setting it cannot read.
    """
    from . import require_nir

    nir = require_nir()
    if source not in mapping.SOURCE_DT:
        raise ValueError(f"source must be one of {list(mapping.SOURCE_DT)}, got {source!r}")
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"graph must be a nir.NIRGraph or the path of a NIR file, got {type(graph).__name__}")
    gmeta = _meta(graph)
    dt = _get(gmeta, "dt", mapping.SOURCE_DT[source]) if dt is None else dt
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0 (NIR time per step), got {dt!r}")
    nodes, edges = _flatten(nir, graph)
    specs, readout, width = _parse(nir, nodes, edges)
    reading = {
        "unscaled_synapse": source == "norse",
        "reset": _reset_reader(source, reset, len(specs)),
        "surrogate": SOURCE_SURROGATE[source](),
    }
    layers = []
    for spec in specs:
        layers.append(_build_layer(nir, nodes, spec, width, float(dt), reading))
        width = layers[-1].hidden_size
    name = str(_get(gmeta, "model", ""))
    model: nn.Module
    if readout is not None:
        w, b = _weights(nodes[readout], None, width, readout)
        classifier = SNNClassifier(_config(gmeta, layers, layers[0].input_size, w.shape[0]))
        classifier.stack.layers = nn.ModuleList(layers)
        classifier.readout = nn.Linear(width, w.shape[0]).to(layers[-1].weight_ih.dtype)
        with torch.no_grad():
            classifier.readout.weight.copy_(torch.from_numpy(w))
            classifier.readout.bias.copy_(torch.from_numpy(b))
        model = classifier
    elif len(layers) == 1 and name not in ("SpikingStack", "Sequential"):
        model = layers[0]
    else:
        stack = SpikingStack(_config(gmeta, layers, layers[0].input_size, width), layers[0].input_size)
        stack.layers = nn.ModuleList(layers)
        model = stack
    return model.eval()
