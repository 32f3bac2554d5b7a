"""spikestab's discrete-time neuron parameters <-> NIR's continuous-time ones (docs/nir.md).

NIR's LI and LIF membranes follow ``tau dv/dt = (v_leak - v) + r I``. One forward-Euler step of length
``dt`` (the convention of snnTorch's NIR export and of Euler-stepping readers) gives

    v_t = (1 - dt/tau) v_{t-1} + (dt/tau) (v_leak + r I_t).

spikestab's step is ``v_t = alpha v_{t-1} + I_t`` with ``alpha = exp(-1/tau_steps)``. They agree for

    tau = dt / (1 - alpha),   r = tau / dt = 1 / (1 - alpha),   v_leak = 0,

so ``tau`` is close to ``tau_steps * dt + dt / 2`` (1/(1 - exp(-x)) = 1/x + 1/2 + O(x)) but not equal to
it. The ALIF trace ``a_t = rho a_{t-1} + (1 - rho) z_{t-1}`` is an LI node with ``tau_a = dt / (1 - rho)``
and ``r = 1``. Everything here is float64 numpy; callers cast.
"""

from __future__ import annotations

import numpy as np

# How one step of a graph's time reads, per library that writes the graph (docs/nir.md, "Graphs from other
# libraries"): the ``dt`` ``import_nir`` uses when neither its argument nor the graph's metadata gives one.
DEFAULT_DT = 1.0
SNNTORCH_DT = 1e-4  # snnTorch 1.0 writes tau = dt/(1 - beta), r = tau/dt with dt fixed at 1e-4 (and reads at it)
NORSE_DT = 1e-6  # Norse 1.1's to_nir(dt=1e-3) writes tau = dt/tau_inv, so its 1e-3 step reads as dt**2 = 1e-6
SOURCE_DT = {"nir": DEFAULT_DT, "snntorch": SNNTORCH_DT, "norse": NORSE_DT}
# snnTorch's reset_mechanism -> spikestab's reset, for a Leaky (no loop) and an RLeaky (loop): RLeaky's "zero"
# also drops that step's input after a spike, Leaky's only the old voltage (snntorch/_neurons, _base_zero).
SNNTORCH_RESETS = {
    "subtract": ("subtract", "subtract"),
    "zero": ("multiplicative", "multiplicative_all"),
    "none": ("none", "none"),
}

# A ratio this close to 1 is 1: the float64 rounding of dt*r/tau for parameters spikestab itself wrote.
UNIT_RTOL = 1e-6
# Metadata (spikestab's exact float32 tau, rho) is used when the NIR parameters agree with it this well.
META_RTOL = 1e-4


def membrane_to_nir(alpha: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(tau, r) of the NIR membrane whose Euler step of ``dt`` decays by ``alpha`` and adds the input once."""
    alpha = np.asarray(alpha, dtype=np.float64)
    tau = dt / (1.0 - alpha)
    return tau, tau / dt


def trace_to_nir(rho: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(tau, r) of the NIR LI node whose Euler step gives a_t = rho a_{t-1} + (1 - rho) z_{t-1}."""
    rho = np.asarray(rho, dtype=np.float64)
    return dt / (1.0 - rho), np.ones_like(rho)


def synapse_to_nir(alpha_syn: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(tau_syn, w_in) of the NIR CubaLIF synapse whose Euler step decays by ``alpha_syn`` and adds the input
    once: tau_syn = dt / (1 - alpha_syn), w_in = tau_syn / dt."""
    tau_syn = dt / (1.0 - np.asarray(alpha_syn, dtype=np.float64))
    return tau_syn, tau_syn / dt


def euler_from_nir(
    tau: np.ndarray, r: np.ndarray, v_leak: np.ndarray, dt: float, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Euler step of an NIR LI/LIF node as ``v_t = decay v_{t-1} + gain I_t + drift``.

    Returns (decay, gain, drift), each per neuron; ``gain`` is exactly 1 where it is within
    ``UNIT_RTOL`` of 1. ValueError (naming ``name``) unless 0 < decay < 1, i.e. tau > dt.
    """
    tau = np.asarray(tau, dtype=np.float64)
    if not np.all(np.isfinite(tau)) or np.any(tau <= dt):
        raise ValueError(
            f"node {name!r}: tau must be finite and larger than dt={dt:g} (one Euler step then "
            f"decays by 1 - dt/tau in (0, 1)), got min tau {float(np.min(tau)):g}"
        )
    step = dt / tau
    decay = 1.0 - step
    gain = snap_unit(step * np.asarray(r, dtype=np.float64))
    drift = step * np.asarray(v_leak, dtype=np.float64)
    return decay, gain, drift


def snap_unit(x: np.ndarray) -> np.ndarray:
    """``x`` with the entries within ``UNIT_RTOL`` of 1 set to exactly 1."""
    x = np.array(x, dtype=np.float64)
    x[np.abs(x - 1.0) <= UNIT_RTOL] = 1.0
    return x


def synapse_from_nir(
    tau_syn: np.ndarray, w_in: np.ndarray, dt: float, name: str, unscaled_input: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(decay, input gain) of one Euler step of a NIR CubaLIF synapse, ``i_t = decay i_{t-1} + gain I_t``.

    The gain is ``dt w_in / tau_syn`` (Euler), or ``w_in`` with ``unscaled_input`` (Norse 1.1's LIFCell adds its
    input to the current unscaled and its exporter writes w_in = 1). ValueError (naming ``name``) unless
    tau_syn > dt."""
    tau_syn = np.asarray(tau_syn, dtype=np.float64)
    if not np.all(np.isfinite(tau_syn)) or np.any(tau_syn <= dt):
        raise ValueError(
            f"node {name!r}: tau_syn must be finite and larger than dt={dt:g}, got min tau_syn "
            f"{float(np.min(tau_syn)):g}"
        )
    w_in = np.asarray(w_in, dtype=np.float64)
    return 1.0 - dt / tau_syn, snap_unit(w_in if unscaled_input else dt / tau_syn * w_in)


def steps_from_decay(decay: np.ndarray) -> np.ndarray:
    """tau in time steps from a per-step decay: -1 / log(decay)."""
    return -1.0 / np.log(np.asarray(decay, dtype=np.float64))


def prefer(stored: object, derived: np.ndarray) -> np.ndarray:
    """The exact value spikestab stored in metadata when it matches the one derived from NIR's
    parameters (within ``META_RTOL``), else the derived one (the graph was edited or written elsewhere)."""
    if stored is None:
        return derived
    stored = np.asarray(stored, dtype=np.float64)
    if stored.shape == derived.shape and np.allclose(stored, derived, rtol=META_RTOL, atol=0.0):
        return stored
    return derived
