"""LIF and ALIF modules: ``Layer`` (whole sequence) and ``Cell`` (one step), sharing one parameter set.

Weights follow ``torch.nn.RNN``: ``weight_ih`` [hidden, input], ``weight_hh`` [hidden, hidden] (its
diagonal masked out unless ``recurrent_diagonal=True``). Sequences are time-first [T, B, N] unless
``batch_first=True``. ``spikes, state = layer(x, state)``; ``layer(x, return_voltage=True)`` gives
``(spikes, voltages, state)``.

Sequence layers take ``checkpoint`` (default False): True or a segment length k (steps) runs the
sequence in checkpointed segments (``kernels.segments``: segments of k steps, ceil(sqrt(T)) for
True), keeping for backward only each segment's input state instead of per-step activations, at the
cost of one more forward pass during backward. Same spikes and gradients.

Parameters are checked at construction, each with the range it accepts: ``tau`` (steps, > 0; default
20) or ``alpha`` = exp(-1/tau) in (0, 1), not both; ``threshold`` > 0; ``tau_adapt`` > 0 and
``beta_adapt`` >= 0 (ALIF); all finite, scalars or per-neuron tensors of shape (hidden_size,), and the
spike function's dampening / sharpness scalars or of shape (hidden_size,).

Input dtype: the layer computes in the dtype of its weights (float32 unless converted with
``layer.to(...)``). Bool and integer inputs (spikes or spike counts, as other libraries often hand them
over) are converted once per call to that dtype (exactly: 0/1, and counts below 2**24 in float32). A
floating input of another precision (float16, bfloat16, float64 for a float32 layer) is refused with a
ValueError saying what to call (``x.float()`` or ``layer.to(x.dtype)``) rather than silently rounded or
promoted; inside ``torch.autocast`` it is passed on as autocast decides.

Non-finite values: a NaN or inf entering a layer (input, state or parameters) gives NaN spikes wherever
the centred voltage v - A is not finite, on every backend, instead of plausible zeros and ones; NaN or
inf gradients coming in reach the same gradients on every backend (docs/theory.md, "Non-finite values").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import kernels
from ..dynamics import Dynamics, NeuronState, check_reset, decay_from, initial_state, step, time_constant_from
from ..kernels.fused import autocast_on
from ..kernels.segments import check_checkpoint, run_checkpointed
from ..surrogate import SurrogateGradient


def _check_size(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer (accepted range [1, inf)), got {value!r}")
    return value


def prepare_input(x: Tensor, input_size: int, dtype: torch.dtype, rank: int = 3, batch_first: bool = False) -> Tensor:
    """A layer's input check, shared by every spiking layer: x's type, rank and width; x returned in the
    layer's ``dtype`` (bool and integer spikes converted exactly, other float dtypes refused outside autocast)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != rank:
        layout = "[T, B, input_size]" if rank == 3 else "[B, input_size]"
        if rank == 3 and batch_first:
            layout = "[B, T, input_size]"
        raise ValueError(f"x must have rank {rank} ({layout}), got shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"x must have last dimension input_size={input_size}, got {x.shape[-1]}")
    if x.dtype == dtype:
        return x
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        return x.to(dtype)  # spikes / counts: exact in any float dtype (integers up to 2**24 in float32)
    if x.is_floating_point() and autocast_on(x.device.type):
        return x
    call = f"x.float() (or x.to({dtype}))" if dtype == torch.float32 else f"x.to({dtype})"
    raise ValueError(
        f"x has dtype {x.dtype} but the layer computes in {dtype}: pass {call}, or convert the "
        f"layer with layer.to({x.dtype})"
    )


def _check_sg_shape(spike_fn: SurrogateGradient, hidden: int) -> None:
    """The SG's dampening / sharpness broadcast over the neurons: scalar, (1,) or (hidden,)."""
    for name in ("dampening", "sharpness"):
        shape = tuple(getattr(spike_fn, name).shape)
        if shape not in ((), (1,), (hidden,)):
            raise ValueError(
                f"spike_fn.{name} must be a scalar or have shape ({hidden},) for a layer of {hidden} "
                f"neurons, got shape {shape}"
            )


def _per_neuron(value: float | Tensor, hidden: int, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(hidden)
    if t.shape != (hidden,):
        raise ValueError(f"{name} must be a scalar or a tensor of shape ({hidden},), got shape {tuple(t.shape)}")
    return t.clone()


TAU_ADAPT = 100.0  # ALIF's default adaptation time constant (steps)
BETA_ADAPT = 1.8  # ALIF's default adaptation strength


class SpikingNeurons(nn.Module):
    """Parameters and dynamics shared by the LIF/ALIF layer and cell modules.

    Every parameter is checked here, at construction (ValueError naming it and its accepted range).
    Input dtype: bool and integer inputs (spikes, counts) are converted to the layer's dtype (that of
    ``weight_ih``); a floating input of another precision is refused with what to call instead (module
    doc).
    """

    adaptive: bool = False
    # registered parameters and buffers (declared for type checkers; set in __init__)
    weight_ih: nn.Parameter
    weight_hh: nn.Parameter | None
    tau: nn.Parameter
    threshold: nn.Parameter
    bias: Tensor
    recurrent_mask: Tensor | None
    rho: Tensor
    beta_adapt: Tensor

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent: bool = True,
        tau: float | Tensor | None = None,
        threshold: float | Tensor = 1.0,
        reset: str = "subtract",
        detach_reset: bool = True,
        spike_fn: SurrogateGradient | None = None,
        bias: bool = False,
        batch_first: bool = False,
        alpha: float | Tensor | None = None,
        learn_tau: bool = False,
        learn_threshold: bool = False,
        recurrent_diagonal: bool = False,
        backend: str = "auto",
        tau_adapt: float | Tensor | None = None,
        beta_adapt: float | Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.reset = check_reset(reset)
        self.detach_reset = bool(detach_reset)
        self.recurrent = bool(recurrent)
        self.batch_first = bool(batch_first)
        self.backend = kernels.canonical_backend(backend)  # an old name read (and warned about) once
        kernels.select(self.backend)  # validates the name now, not at the first forward
        thr = _per_neuron(threshold, hidden_size, "threshold", dtype)
        if not torch.isfinite(thr).all() or (thr <= 0).any():
            raise ValueError(f"threshold must be finite and > 0 (accepted range (0, inf)), got {threshold!r}")
        # tau is the stored parameter (learnable, in time steps), alpha = exp(-1/tau) is derived; a given tau
        # is stored as given, so that the layer converted to float64 runs with exactly exp(-1/tau)
        tau_steps = _per_neuron(
            time_constant_from(tau, alpha, default_tau=20.0, dtype=dtype), hidden_size, "tau", dtype
        )
        self.tau = nn.Parameter(tau_steps, requires_grad=learn_tau)
        self.threshold = nn.Parameter(thr, requires_grad=learn_threshold)
        self.spike_fn = spike_fn if spike_fn is not None else SurrogateGradient("fast-sigmoid")
        if not isinstance(self.spike_fn, SurrogateGradient):
            raise ValueError(f"spike_fn must be a spikestab.surrogate.SurrogateGradient, got {type(spike_fn).__name__}")
        _check_sg_shape(self.spike_fn, hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, dtype=dtype)) if recurrent else None
        mask = torch.ones(hidden_size, hidden_size, dtype=dtype)
        if not recurrent_diagonal:
            mask.fill_diagonal_(0.0)
        self.register_buffer("recurrent_mask", mask if recurrent else None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(hidden_size, dtype=dtype))
        else:
            self.register_buffer("bias", torch.zeros(hidden_size, dtype=dtype))
        self._init_adaptation(tau_adapt, beta_adapt, dtype)
        self.reset_parameters()

    def _init_adaptation(
        self, tau_adapt: float | Tensor | None, beta_adapt: float | Tensor | None, dtype: torch.dtype
    ) -> None:
        """ALIF's buffers: rho = exp(-1/tau_adapt) and beta_adapt, checked (ValueError naming the range); a
        layer without adaptation refuses them (ValueError: they would do nothing)."""
        given = [name for name, value in (("tau_adapt", tau_adapt), ("beta_adapt", beta_adapt)) if value is not None]
        if not self.adaptive:
            if given:
                what = "is an ALIF option" if len(given) == 1 else "are ALIF options"
                raise ValueError(
                    f"{' and '.join(given)} {what}; {type(self).__name__} has no adaptation (use ALIF or ALIFCell)"
                )
            return
        tau_adapt = TAU_ADAPT if tau_adapt is None else tau_adapt
        beta_adapt = BETA_ADAPT if beta_adapt is None else beta_adapt
        decay_from(tau_adapt, None, name="tau_adapt")  # validates
        rho = torch.exp(-1.0 / time_constant_from(tau_adapt, None, name="tau_adapt", dtype=torch.float64))
        self.register_buffer("rho", _per_neuron(rho.to(dtype), self.hidden_size, "tau_adapt", dtype))
        beta = _per_neuron(beta_adapt, self.hidden_size, "beta_adapt", dtype)
        if not torch.isfinite(beta).all() or (beta < 0).any():
            raise ValueError(f"beta_adapt must be finite and >= 0 (accepted range [0, inf)), got {beta_adapt!r}")
        self.register_buffer("beta_adapt", beta)

    def reset_parameters(self) -> None:
        """Glorot-uniform weights (the official code's initialiser): U(+-sqrt(6/(fan_in + fan_out)))."""
        nn.init.xavier_uniform_(self.weight_ih)
        if self.weight_hh is not None:
            nn.init.xavier_uniform_(self.weight_hh)

    @property
    def alpha(self) -> Tensor:
        """Membrane decay per step, exp(-1/tau), per neuron."""
        return torch.exp(-1.0 / self.tau)

    def recurrent_weight(self) -> Tensor | None:
        """The effective recurrent matrix (masked diagonal), [hidden, hidden]."""
        if self.weight_hh is None:
            return None
        if self.recurrent_mask is None:
            raise RuntimeError(f"{type(self).__name__} has recurrent weights but no recurrent_mask buffer")
        return self.weight_hh * self.recurrent_mask

    def dynamics(self) -> Dynamics:
        return Dynamics(
            alpha=self.alpha,
            threshold=self.threshold,
            spike_fn=self.spike_fn,
            reset=self.reset,
            detach_reset=self.detach_reset,
            rho=self.rho if self.adaptive else None,
            beta_adapt=self.beta_adapt if self.adaptive else None,
        )

    def input_current(self, x: Tensor) -> Tensor:
        """W_ih x + b for any leading shape (one matrix product for all time steps)."""
        return torch.nn.functional.linear(x, self.weight_ih, self.bias)

    def sequence_current(self, x: Tensor) -> tuple[Tensor, kernels.Kernel]:
        """The input current of all steps of x [T, B, I] and the kernel to run it with: ``kernels.prepare``
        (event-driven projection where it pays), unless a subclass overrides ``input_current``, whose
        current then counts, with the kernel ``backend`` selects for a dense current."""
        if self.custom_current:
            return self.input_current(x), kernels.select(self.backend)
        return kernels.prepare(x, self.weight_ih, self.bias, self.backend)

    @property
    def custom_current(self) -> bool:
        """Whether a subclass overrides ``input_current`` (which then replaces W_ih x + b everywhere)."""
        return type(self).input_current is not SpikingNeurons.input_current

    def initial_state(self, batch: int, like: Tensor) -> NeuronState:
        return initial_state(batch, self.hidden_size, self.adaptive, like)

    def _check_state(self, state: NeuronState | None, batch: int, like: Tensor) -> NeuronState:
        if state is None:
            return self.initial_state(batch, like)
        if not isinstance(state, NeuronState):
            state = NeuronState(*state)
        for name, t in zip(("v", "z", "a"), state):
            if t is None and name == "a" and not self.adaptive:
                continue
            if t is None or tuple(t.shape) != (batch, self.hidden_size):
                got = None if t is None else tuple(t.shape)
                raise ValueError(f"state.{name} must have shape ({batch}, {self.hidden_size}), got {got}")
        return state

    def _prepare_input(self, x: Tensor, rank: int) -> Tensor:
        """Check x's type, rank and width; return it in the layer's dtype (module doc: input dtype)."""
        return prepare_input(x, self.input_size, self.weight_ih.dtype, rank, self.batch_first)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, recurrent={self.recurrent}, reset={self.reset!r}, "
            f"detach_reset={self.detach_reset}, tau~{self.tau.mean().item():.3g}, backend={self.backend!r}"
        )


class _LayerMixin(SpikingNeurons):
    """Whole-sequence forward: [T, B, input] -> spikes [T, B, hidden]; ``checkpoint`` (False, True or
    steps per segment) trades one more forward pass for keeping only segment states (module doc)."""

    def __init__(self, *args, checkpoint: bool | int = False, **kwargs) -> None:
        checkpoint = check_checkpoint(checkpoint)
        super().__init__(*args, **kwargs)
        self.checkpoint = checkpoint

    def forward(self, x: Tensor, state: NeuronState | None = None, return_voltage: bool = False):
        x = self._prepare_input(x, 3)
        if x.is_sparse and (self.batch_first or self.checkpoint or self.custom_current):
            x = x.to_dense()  # a sparse COO batch is read by the time-first projection (kernels.prepare) only
        if self.batch_first:
            x = x.transpose(0, 1)
        state = self._check_state(state, x.shape[1], self.weight_ih if x.is_sparse else x)
        if self.checkpoint and self.custom_current:
            raise ValueError(
                "checkpoint must be False for a layer that overrides input_current (the checkpointed "
                f"segments recompute W_ih x + b themselves), got {self.checkpoint!r}"
            )
        if self.checkpoint:
            z, v, state = run_checkpointed(
                x,
                self.weight_ih,
                self.bias,
                self.recurrent_weight(),
                self.dynamics(),
                state,
                self.backend,
                return_voltage,
                self.checkpoint,
            )
        else:
            current, kernel = self.sequence_current(x)
            z, v, state = kernel(current, self.recurrent_weight(), self.dynamics(), state, return_voltage)
        if self.batch_first:
            z = z.transpose(0, 1)
            v = v.transpose(0, 1) if v is not None else None
        return (z, v, state) if return_voltage else (z, state)


class _CellMixin(SpikingNeurons):
    """One-step forward: [B, input] -> spikes [B, hidden]."""

    def forward(self, x: Tensor, state: NeuronState | None = None, return_voltage: bool = False):
        x = self._prepare_input(x, 2)
        state = self._check_state(state, x.shape[0], x)
        state = step(self.input_current(x), state, self.recurrent_weight(), self.dynamics())
        return (state.z, state.v, state) if return_voltage else (state.z, state)


class LIF(_LayerMixin, SpikingNeurons):
    """Leaky integrate-and-fire layer over a whole sequence (feed-forward or recurrent);
    ``checkpoint=True`` or ``k`` recomputes segments of k steps instead of keeping activations."""


class ALIF(_LayerMixin, SpikingNeurons):
    """Adaptive-threshold LIF layer (Bellec et al.): A_t = threshold + beta_adapt * a_t;
    ``checkpoint`` as for ``LIF``."""

    adaptive = True


class LIFCell(_CellMixin, SpikingNeurons):
    """One time step of a LIF layer."""


class ALIFCell(_CellMixin, SpikingNeurons):
    """One time step of an ALIF layer."""

    adaptive = True


def spiking_layers(model: nn.Module) -> list[SpikingNeurons]:
    """All spikestab spiking layers of ``model`` in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, SpikingNeurons)]


def require_spiking_layers(model: nn.Module) -> list[SpikingNeurons]:
    """``spiking_layers(model)``; ValueError when there is none (what stabilisation, calibration and the
    presets need to work on)."""
    layers = spiking_layers(model)
    if not layers:
        raise ValueError("model must contain at least one spikestab spiking layer (LIF, ALIF, LIFCell, ALIFCell)")
    return layers
