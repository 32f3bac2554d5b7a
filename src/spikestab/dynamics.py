"""Functional LIF/ALIF dynamics: the state and parameter types and one time step on plain tensors.

A leaf module (it imports only ``spikestab.surrogate``): the neuron modules (``spikestab.neurons``) and
the sequence kernels (``spikestab.kernels``) both build on it. The equations are derived in
docs/theory.md ("The neuron").

One step, in the order of the official code, for input current I_t (input projection plus bias):
    I_t  += W_hh z_{t-1}                               (recurrent layers; diagonal masked by the caller)
    a_t   = rho a_{t-1} + (1 - rho) z_{t-1}            (ALIF only)
    A_t   = threshold + beta_adapt a_t                 (A_t = threshold for LIF)
    v_t   = alpha v_{t-1} + I_t - A_t z_{t-1}          reset="subtract"
          = alpha v_{t-1} (1 - z_{t-1}) + I_t          reset="multiplicative"     (code: multreset2)
          = (alpha v_{t-1} + I_t) (1 - z_{t-1})        reset="multiplicative_all" (code: multreset1)
          = alpha v_{t-1} + I_t                        reset="none"
    z_t   = H(v_t - A_t), backward through the surrogate gradient.
With ``detach_reset`` the whole reset term (the subtracted current, or the (1 - z) factor) carries no
gradient, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .surrogate import SurrogateGradient

RESETS = ("subtract", "multiplicative", "multiplicative_all", "none")


class NeuronState(NamedTuple):
    """State carried between steps: voltage, last spikes and (ALIF) adaptation, each [B, H]."""

    v: Tensor
    z: Tensor
    a: Tensor | None = None


@dataclass(frozen=True)
class Dynamics:
    """Per-neuron parameters of one layer, resolved for one forward pass."""

    alpha: Tensor
    threshold: Tensor
    spike_fn: SurrogateGradient
    reset: str = "subtract"
    detach_reset: bool = True
    rho: Tensor | None = None
    beta_adapt: Tensor | None = None

    @property
    def adaptive(self) -> bool:
        return self.rho is not None


def check_reset(reset: str) -> str:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {list(RESETS)}, got {reset!r}")
    return reset


def time_constant_from(
    tau: float | Tensor | None,
    alpha: float | Tensor | None,
    name: str = "tau",
    default_tau: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The time constant tau (steps) in ``dtype`` from either ``tau`` or ``alpha`` = exp(-1/tau), not both
    (validated as :func:`decay_from` does). A given tau is kept as given (no round trip through alpha,
    so a float64 layer runs with exactly exp(-1/tau)); a given alpha becomes -1/log(alpha) in float64."""
    decay_from(tau, alpha, name, default_tau)  # validates, with the messages of decay_from
    if alpha is None:
        return torch.as_tensor(default_tau if tau is None else tau, dtype=torch.float64).to(dtype).clone()
    return tau_from_alpha(torch.as_tensor(alpha, dtype=torch.float64)).to(dtype)


def decay_from(
    tau: float | Tensor | None, alpha: float | Tensor | None, name: str = "tau", default_tau: float | None = None
) -> Tensor:
    """Per-step decay factor exp(-1/tau) (float32) from either ``tau`` (steps, > 0) or ``alpha`` (in
    (0, 1)), not both; neither: ``default_tau`` (when given)."""
    aname = "alpha" if name == "tau" else name.replace("tau", "alpha")
    if tau is not None and alpha is not None:
        raise ValueError(
            f"give {name} or {aname}, not both (got {name}={_show(tau)} and {aname}={_show(alpha)}); "
            f"{aname} = exp(-1/{name})"
        )
    if tau is None and alpha is None:
        if default_tau is None:
            raise ValueError(f"give {name} (time steps, > 0) or {aname} (in (0, 1))")
        tau = default_tau
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=torch.float32)
        if not torch.isfinite(a).all() or (a <= 0).any() or (a >= 1).any():
            raise ValueError(f"{aname} must be finite and in the open interval (0, 1), got {alpha!r}")
        return a.clone()
    t = torch.as_tensor(tau, dtype=torch.float32)
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and > 0 (time steps, accepted range (0, inf)), got {tau!r}")
    decay = torch.exp(-1.0 / t)
    if (decay >= 1.0).any():  # 1/tau below half a float32 ulp of 1: no leak at all, and log(alpha) = 0
        raise ValueError(
            f"{name} must be at most about 3.3e7 time steps (beyond, exp(-1/{name}) rounds to 1 in "
            f"float32); got {tau!r}"
        )
    return decay


def _show(value: float | Tensor) -> str:
    if isinstance(value, Tensor):
        return f"{value.item()!r}" if value.numel() == 1 else f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def tau_from_alpha(alpha: Tensor) -> Tensor:
    """tau = -1 / log(alpha), in alpha's dtype."""
    return -1.0 / torch.log(alpha)


def initial_state(batch: int, hidden: int, adaptive: bool, like: Tensor) -> NeuronState:
    zeros = like.new_zeros(batch, hidden)
    return NeuronState(zeros, zeros, zeros if adaptive else None)


def adaptation(dyn: Dynamics, a: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(rho, beta_adapt, a) of an adaptive layer, for its step: ValueError naming what is missing where
    ``dyn`` has rho without beta_adapt or the state has no adaptation ``a`` (an ALIF step needs all three)."""
    if dyn.rho is None or dyn.beta_adapt is None or a is None:
        given = {"rho": dyn.rho, "beta_adapt": dyn.beta_adapt, "state.a": a}
        missing = [name for name, t in given.items() if t is None]
        raise ValueError(f"an adaptive (ALIF) step needs rho, beta_adapt and the state's a; missing {missing}")
    return dyn.rho, dyn.beta_adapt, a


def step(current: Tensor, state: NeuronState, weight_hh: Tensor | None, dyn: Dynamics) -> NeuronState:
    """Advance one time step. ``current`` [B, H] is W_ih x_t + b; returns the new state (v_t, z_t, a_t)."""
    v_prev, z_prev, a = state
    if weight_hh is not None:
        current = current + z_prev @ weight_hh.t()
    thr = dyn.threshold
    if dyn.adaptive:
        rho, beta_adapt, a_prev = adaptation(dyn, a)
        a = rho * a_prev + (1.0 - rho) * z_prev
        thr = thr + beta_adapt * a
    z_reset = z_prev.detach() if dyn.detach_reset else z_prev
    if dyn.reset == "subtract":
        reset_current = thr * z_prev
        if dyn.detach_reset:
            reset_current = reset_current.detach()
        v = dyn.alpha * v_prev + current - reset_current
    elif dyn.reset == "multiplicative":
        v = dyn.alpha * v_prev * (1.0 - z_reset) + current
    elif dyn.reset == "multiplicative_all":
        v = (dyn.alpha * v_prev + current) * (1.0 - z_reset)
    else:
        v = dyn.alpha * v_prev + current
    z = dyn.spike_fn(v - thr)
    return NeuronState(v, z, a)
