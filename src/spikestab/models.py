"""Stacked recurrent SNN classifier and SNN language model (docs/theory.md, "Training")."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .neurons import ALIF, LIF, SLSTM, NeuronState
from .neurons.cuba import CubaLIF
from .neurons.dropout import Dropout
from .neurons.layers import BETA_ADAPT, TAU_ADAPT
from .surrogate import SurrogateGradient, canonical_shape

NETS = {"lif": LIF, "alif": ALIF, "cuba": CubaLIF, "slstm": SLSTM}
KINDS = ("classification", "language")  # the task kinds a model is built for (``build_model``)


class Run(NamedTuple):
    """What ``simulate`` returns for both models: logits [T, B, C], every layer's spikes, every layer's
    voltages (None unless recorded) and the states to carry into the next batch (None for a classifier,
    whose every batch starts at rest)."""

    logits: Tensor
    spikes: list[Tensor]
    voltages: list[Tensor] | None
    states: list[NeuronState] | None


def parse_layers(spec: str | int | list | tuple) -> tuple[int, ...]:
    """``2x256`` -> (256, 256); ``256,128`` -> (256, 128); ``128`` -> (128,)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        spec = ",".join(str(s) for s in spec)
    if not isinstance(spec, str):
        raise ValueError(f"layers must be a spec like '2x256' or '256,128', got {spec!r}")
    text = spec.replace(" ", "")
    m = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if m:
        count, width = int(m.group(1)), int(m.group(2))
        sizes = (width,) * count
    elif re.fullmatch(r"\d+(,\d+)*", text):
        sizes = tuple(int(s) for s in text.split(","))
    else:
        raise ValueError(f"layers must look like 'NxW' (e.g. 2x256) or 'W1,W2,...' (e.g. 256,128), got {spec!r}")
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"layers must have at least one layer and positive widths, got {spec!r}")
    return sizes


@dataclass
class SNNConfig:
    """Architecture and neuron settings of a stacked spiking network."""

    input_size: int
    output_size: int
    hidden_sizes: tuple[int, ...] = (128, 128)
    net: str = "lif"
    dropout: float = 0.1
    recurrent: bool = True
    tau: float = 20.0
    threshold: float = 1.0
    reset: str = "subtract"
    detach_reset: bool = True
    surrogate: str = "fast-sigmoid"
    dampening: float = 1.0
    sharpness: float = 1.0
    tail: float | None = None
    bias: bool = True
    learn_tau: bool = False
    learn_threshold: bool = False
    tau_adapt: float = TAU_ADAPT
    beta_adapt: float = BETA_ADAPT
    backend: str = "auto"
    checkpoint: bool | int = False  # segment checkpointing of every layer (False, True or steps per segment)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if self.net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {self.net!r}")
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {self.hidden_sizes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("input_size", "output_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def layer_kwargs(self) -> dict:
        if self.net == "slstm":  # no membrane, threshold or reset: the LIF options do not apply
            return dict(bias=self.bias)
        kw = dict(
            recurrent=self.recurrent,
            tau=self.tau,
            threshold=self.threshold,
            reset=self.reset,
            detach_reset=self.detach_reset,
            bias=self.bias,
            learn_tau=self.learn_tau,
            learn_threshold=self.learn_threshold,
            backend=self.backend,
            checkpoint=self.checkpoint,
        )
        if self.net == "alif":
            kw.update(tau_adapt=self.tau_adapt, beta_adapt=self.beta_adapt)
        return kw

    def make_spike_fn(self) -> SurrogateGradient:
        tail = self.tail if canonical_shape(self.surrogate) == "q-pseudospike" else None  # any name of the shape
        return SurrogateGradient(self.surrogate, self.dampening, self.sharpness, tail)


def build_stack(cfg: SNNConfig, input_size: int) -> nn.ModuleList:
    """[Dropout -> spiking layer] x L, each layer with its own SG object."""
    layers = nn.ModuleList()
    width = input_size
    for h in cfg.hidden_sizes:
        layers.append(NETS[cfg.net](width, h, spike_fn=cfg.make_spike_fn(), **cfg.layer_kwargs()))
        width = h
    return layers


class SpikingStack(nn.Module):
    """Dropout before each spiking layer; returns the last layer's spikes and every layer's record. The
    input may be a sparse COO batch (``data.SpikeLoader(sparse=True)``): LIF and ALIF layers read it as it
    is, other layers its ``to_dense()``."""

    def __init__(self, cfg: SNNConfig, input_size: int) -> None:
        super().__init__()
        self.layers = build_stack(cfg, input_size)
        self.dropout = Dropout(cfg.dropout)  # torch's dropout, bit for bit, drawn in C

    def forward(self, x: Tensor, states: list[NeuronState] | None = None, record_voltage: bool = False):
        spikes, volts, new_states = [], [], []
        h = x
        for i, layer in enumerate(self.layers):
            st = None if states is None else states[i]
            h = self.dropout(h)
            if h.is_sparse and not isinstance(layer, (LIF, ALIF)):
                h = h.to_dense()
            out = layer(h, st, return_voltage=record_voltage)
            z, v, st = out if record_voltage else (out[0], None, out[1])
            spikes.append(z.abs() if isinstance(layer, SLSTM) else z)  # the sLSTM's signed spikes: |h| = o
            volts.append(v)
            new_states.append(st)
            h = z
        return h, spikes, (volts if record_voltage else None), new_states


class SNNClassifier(nn.Module):
    """Stacked recurrent SNN with a linear readout at every time step.

    ``forward(x)`` returns per-step logits [T, B, C]; accuracy uses their time average
    (``predict``). ``run`` also returns every layer's spikes (and voltages on request).
    """

    def __init__(self, cfg: SNNConfig) -> None:
        super().__init__()
        self.config = cfg
        self.stack = SpikingStack(cfg, cfg.input_size)
        self.readout = nn.Linear(cfg.hidden_sizes[-1], cfg.output_size)
        nn.init.xavier_uniform_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    output_layer = "readout"  # the module whose output is the logits

    def simulate(self, x: Tensor, states: list[NeuronState] | None = None, record_voltage: bool = False) -> Run:
        """x [T, B, N] -> ``Run``; ``states`` (default: at rest) start the layers, and no state is handed
        on (``Run.states`` is None): every sample is a sequence of its own."""
        h, spikes, volts, _ = self.stack(x, states, record_voltage)
        return Run(self.readout(h), spikes, volts, None)

    def run(self, x: Tensor, record_voltage: bool = False) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
        """-> (logits, spikes per layer, voltages or None): ``simulate`` without its states (kept one
        release for code that unpacks three values)."""
        return self.simulate(x, record_voltage=record_voltage)[:3]

    def forward(self, x: Tensor) -> Tensor:
        return self.simulate(x).logits

    @staticmethod
    def predict(logits: Tensor) -> Tensor:
        """Class = argmax of the time-averaged logits."""
        return logits.mean(0).argmax(-1)


class SNNLanguageModel(nn.Module):
    """Embedding -> spiking stack -> tied output projection (logits = h E^T + b).

    The last spiking layer must be as wide as the embedding (``hidden_sizes[-1] == input_size``);
    ``output_size`` is the vocabulary size. States carry over between consecutive batches.
    """

    def __init__(self, cfg: SNNConfig) -> None:
        super().__init__()
        if cfg.hidden_sizes[-1] != cfg.input_size:
            raise ValueError(
                f"hidden_sizes[-1] must equal the embedding width input_size={cfg.input_size} for the tied "
                f"projection, got {cfg.hidden_sizes[-1]}"
            )
        self.config = cfg
        self.embedding = nn.Embedding(cfg.output_size, cfg.input_size)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.stack = SpikingStack(cfg, cfg.input_size)
        self.output_bias = nn.Parameter(torch.zeros(cfg.output_size))

    output_layer = "embedding"  # the tied output projection gives the logits

    def simulate(self, tokens: Tensor, states: list[NeuronState] | None = None, record_voltage: bool = False) -> Run:
        """tokens [T, B] -> ``Run`` (logits [T, B, V]); ``Run.states`` continue the text in the next batch."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have rank 2 [T, B], got shape {tuple(tokens.shape)}")
        h, spikes, volts, new_states = self.stack(self.embedding(tokens), states, record_voltage)
        logits = torch.nn.functional.linear(h, self.embedding.weight, self.output_bias)
        return Run(logits, spikes, volts, new_states)

    run = simulate  # the name before ``Run`` (kept one release)

    def forward(self, tokens: Tensor, states: list[NeuronState] | None = None):
        out = self.simulate(tokens, states)
        return out.logits, out.states


SpikingModel = SNNClassifier | SNNLanguageModel


def build_model(cfg: SNNConfig, kind: str = "classification") -> SpikingModel:
    """The network for a task of ``kind`` (``KINDS``): an SNNClassifier, or an SNNLanguageModel whose
    embedding is as wide as its last layer (the tied projection; ``cfg.input_size`` is set to that width)."""
    if kind == "language":
        return SNNLanguageModel(replace(cfg, input_size=cfg.hidden_sizes[-1]))
    if kind != "classification":
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return SNNClassifier(cfg)


def load_model_state(model: nn.Module, state: dict) -> None:
    """load_state_dict that first reshapes buffers whose shape the stability conditions changed
    (e.g. a scalar SG dampening that condition III made per-neuron), on the device of the buffer they
    replace (a checkpoint read onto the CPU loads into a model on a GPU)."""
    own = dict(model.named_buffers())
    for name, value in state.items():
        if name in own and own[name] is not None and own[name].shape != value.shape:
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attr, value.to(own[name].device, copy=True))
    model.load_state_dict(state)
