"""Current-based LIF (CUBA): a synaptic current with its own time constant drives the membrane.

One step, for input current I_t = W_ih x_t + b (the LIF step of ``neurons.functional`` after the synapse):
    i_t = alpha_syn i_{t-1} + I_t + W_hh z_{t-1}      (recurrent layers; diagonal masked)
    v_t = alpha v_{t-1} + i_t - reset                  (every reset of ``neurons.functional.RESETS``)
    z_t = H(v_t - threshold), backward through the surrogate gradient.
alpha_syn = exp(-1/tau_syn). The membrane part is exactly spikestab's LIF step with current i_t, so the
two neurons differ only by the synaptic filter; with tau_syn -> 0 the CUBA LIF becomes the LIF.

Compared with stork's ``LIFGroup`` and Norse's ``lif_feed_forward_step``: those feed the membrane with
the previous step's synaptic current scaled by (1 - alpha) (stork) or dt/tau_mem (Norse); here the
current acts in the step it arrives and is not scaled, as in spikestab's LIF. The post-synaptic potential
kernel that the fluctuation-driven initialisation integrates is the one of these equations
(``spikestab.init.fluctuation.psp_integrals``).

Kernels: the reference loop below is the ground truth. A feed-forward layer's synaptic current does not
depend on the spikes, so it is filtered first (a linear recurrence without reset) and the membrane runs
through the LIF kernel ``backend`` selects (``kernels.select``: the fused or event-driven paths with their
hand-written backward); recurrent layers run the reference loop. docs/extensions.md ("Current-based LIF")
gives the timing.

The stability engine's conditions are derived for LIF/ALIF; on a CUBA layer ``dynamics()`` raises instead of
letting them treat it as a LIF (``membrane_dynamics()`` is the LIF part this layer uses itself).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import kernels
from .functional import Dynamics, NeuronState, decay_from, step, tau_from_alpha
from .layers import SpikingNeurons

FILTER_GEMM_STEPS = 2048  # longest sequence filtered by one matrix product (the matrix is T x T)

__all__ = ["CubaLIF", "CubaState", "cuba_step", "run_cuba_reference", "synaptic_filter"]


class CubaState(NamedTuple):
    """State carried between steps: voltage, last spikes and synaptic current, each [B, H]."""

    v: Tensor
    z: Tensor
    i: Tensor


def cuba_step(
    current: Tensor, state: CubaState, weight_hh: Tensor | None, dyn: Dynamics, alpha_syn: Tensor
) -> CubaState:
    """Advance one step; ``current`` [B, H] is W_ih x_t + b."""
    syn = alpha_syn * state.i + current
    if weight_hh is not None:
        syn = syn + state.z @ weight_hh.t()
    new = step(syn, NeuronState(state.v, state.z), None, dyn)
    return CubaState(new.v, new.z, syn)


def run_cuba_reference(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, alpha_syn: Tensor, state: CubaState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, CubaState]:
    """Plain autograd loop over ``current`` [T, B, H]: spikes, voltages (or None) and the final state."""
    spikes, volts = [], []
    for t in range(current.shape[0]):
        state = cuba_step(current[t], state, weight_hh, dyn, alpha_syn)
        spikes.append(state.z)
        if return_voltage:
            volts.append(state.v)
    return torch.stack(spikes), (torch.stack(volts) if return_voltage else None), state


def synaptic_filter(current: Tensor, alpha_syn: Tensor, i0: Tensor) -> Tensor:
    """i_t = alpha_syn i_{t-1} + current_t for every step of ``current`` [T, B, H] from i_{-1} = i0.

    With one decay for all neurons and at most ``FILTER_GEMM_STEPS`` steps this is one product with the
    lower-triangular matrix alpha_syn^(t - k) (about 4x faster on CPU than the step loop, forward and
    backward, at T = 200); otherwise, and for a current holding a NaN or inf (the matrix's zeros would
    carry it to the steps before it: 0 * NaN is NaN), the step loop."""
    T = current.shape[0]
    a = alpha_syn.reshape(-1)
    if T <= FILTER_GEMM_STEPS and bool((a == a[0]).all()) and bool(torch.isfinite(current).all()):
        k = torch.arange(T, device=current.device)
        lag = (k[:, None] - k[None, :]).to(current.dtype)
        beta = a[0].to(current.dtype)
        filt = torch.where(lag >= 0, beta ** lag.clamp_min(0.0), current.new_zeros(()))
        out = (filt @ current.reshape(T, -1)).reshape(current.shape)
        return out + (beta ** (k + 1).to(current.dtype))[:, None, None] * i0
    steps, i = [], i0
    for t in range(T):
        i = alpha_syn * i + current[t]
        steps.append(i)
    return torch.stack(steps)


class CubaLIF(SpikingNeurons):
    """Current-based LIF layer over a whole sequence, feed-forward or recurrent.

    Arguments and checks as for ``spikestab.neurons.LIF`` (ALIF options excluded), plus ``tau_syn`` (steps,
    > 0) or ``alpha_syn`` = exp(-1/tau_syn) in (0, 1), not both; neither: half the membrane time constant
    (Norse's default ratio, and the paper's stork setting of 20 ms / 10 ms). ``spikes, state = layer(x,
    state)`` with ``state`` a :class:`CubaState` (None: zeros); ``return_voltage=True`` adds the voltages.
    ``checkpoint`` must stay False (accepted so that the models factory can pass its options through).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *args,
        tau_syn: float | Tensor | None = None,
        alpha_syn: float | Tensor | None = None,
        learn_tau_syn: bool = False,
        checkpoint: bool | int = False,
        **kwargs,
    ) -> None:
        if checkpoint:
            raise ValueError(
                f"checkpoint must be False for CubaLIF (segment checkpointing is implemented for "
                f"LIF/ALIF only), got {checkpoint!r}"
            )
        super().__init__(input_size, hidden_size, *args, **kwargs)
        if tau_syn is None and alpha_syn is None:
            tau_syn = self.tau.detach() / 2.0
        syn = decay_from(tau_syn, alpha_syn, name="tau_syn")
        if syn.dim() == 0:
            syn = syn.expand(hidden_size)
        if syn.shape != (hidden_size,):
            raise ValueError(f"tau_syn must be a scalar or a tensor of shape ({hidden_size},), got {tuple(syn.shape)}")
        self.tau_syn = nn.Parameter(tau_from_alpha(syn.clone()), requires_grad=learn_tau_syn)

    @property
    def alpha_syn(self) -> Tensor:
        """Synaptic decay per step, exp(-1/tau_syn), per neuron."""
        return torch.exp(-1.0 / self.tau_syn)

    def dynamics(self) -> Dynamics:
        raise ValueError(
            "CubaLIF has a synaptic current the LIF/ALIF stability conditions and measurements do not "
            "model; use stabilize='none' with net 'cuba' (spikestab.init.fluctuation initialises it)"
        )

    def membrane_dynamics(self) -> Dynamics:
        """The LIF membrane part of the step (decay, threshold, reset, surrogate)."""
        return Dynamics(
            alpha=self.alpha,
            threshold=self.threshold,
            spike_fn=self.spike_fn,
            reset=self.reset,
            detach_reset=self.detach_reset,
        )

    def initial_state(self, batch: int, like: Tensor) -> CubaState:  # type: ignore[override]
        zeros = like.new_zeros(batch, self.hidden_size)
        return CubaState(zeros, zeros, zeros)

    def _state(self, state: CubaState | tuple | None, batch: int, like: Tensor) -> CubaState:
        if state is None:
            return self.initial_state(batch, like)
        state = CubaState(*state)
        for name, t in zip(CubaState._fields, state):
            if t is None or tuple(t.shape) != (batch, self.hidden_size):
                got = None if t is None else tuple(t.shape)
                raise ValueError(f"state.{name} must have shape ({batch}, {self.hidden_size}), got {got}")
        return state

    def forward(self, x: Tensor, state: CubaState | None = None, return_voltage: bool = False):
        x = self._prepare_input(x, 3)
        if self.batch_first:
            x = x.transpose(0, 1)
        state = self._state(state, x.shape[1], x)
        current = self.input_current(x)
        dyn, syn = self.membrane_dynamics(), self.alpha_syn
        if self.recurrent:
            z, v, state = run_cuba_reference(current, self.recurrent_weight(), dyn, syn, state, return_voltage)
        else:
            i = synaptic_filter(current, syn, state.i)
            z, v, lif = kernels.select(self.backend)(i, None, dyn, NeuronState(state.v, state.z), return_voltage)
            state = CubaState(lif.v, lif.z, i[-1])
        if self.batch_first:
            z = z.transpose(0, 1)
            v = v.transpose(0, 1) if v is not None else None
        return (z, v, state) if return_voltage else (z, state)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau_syn~{self.tau_syn.mean().item():.3g}"
