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


def euler_from_nir(tau: np.ndarray, r: np.ndarray, v_leak: np.ndarray, dt: float,
                   name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Euler step of an NIR LI/LIF node as ``v_t = decay v_{t-1} + gain I_t + drift``.

    Returns (decay, gain, drift), each per neuron; ``gain`` is exactly 1 where it is within
    ``UNIT_RTOL`` of 1. ValueError (naming ``name``) unless 0 < decay < 1, i.e. tau > dt.
    """
    tau = np.asarray(tau, dtype=np.float64)
    if not np.all(np.isfinite(tau)) or np.any(tau <= dt):
        raise ValueError(f"node {name!r}: tau must be finite and larger than dt={dt:g} (one Euler step then "
                         f"decays by 1 - dt/tau in (0, 1)), got min tau {float(np.min(tau)):g}")
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
