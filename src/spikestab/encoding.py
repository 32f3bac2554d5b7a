"""Spike encoders: turn values in [0, 1] (pixels, features) into spike trains a spiking layer reads.

- ``latency_encode``: the sl-MNIST latency code (docs/theory.md, "Tasks"), one spike per value at most, brighter
  earlier; it returns the spike step of every value (-1: none), and ``latency_raster`` the [T, n, N] tensor.
- ``rate_encode``: rate (Bernoulli) coding, a spike at every step with probability ``max_rate * x``.

Layers take time-major float32 tensors [T, B, N]; both encoders return that layout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["N_LATENCY_STEPS", "latency_encode", "latency_raster", "rate_encode"]

N_LATENCY_STEPS = 100


def latency_encode(images: np.ndarray) -> np.ndarray:
    """sl-MNIST latency code (docs/theory.md, "Tasks"): per pixel x in [0, 1], x' = 50x and, when x' > 0.2,
    T = round(500 ln(x' / (x' - 0.2))). The pixel spikes once at step T if 0 < T < 100; otherwise (and
    for x' <= 0.2) it never spikes. Returns int16 steps with -1 for "no spike", same shape as input."""
    x = np.asarray(images, dtype=np.float64)
    if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
        raise ValueError("images must hold pixel values in [0, 1]")
    xp = 50.0 * x
    on = xp > 0.2
    t = np.full(x.shape, -1, dtype=np.int64)
    t[on] = np.rint(500.0 * np.log(xp[on] / (xp[on] - 0.2)))
    t[(t <= 0) | (t >= N_LATENCY_STEPS)] = -1
    return t.astype(np.int16)


def latency_raster(steps: np.ndarray, n_steps: int = N_LATENCY_STEPS) -> Tensor:
    """Spike steps [n, N] (``latency_encode``'s output, -1 = no spike) as a float32 raster [n_steps, n, N]."""
    s = torch.as_tensor(np.asarray(steps, dtype=np.int64))
    if s.dim() != 2:
        raise ValueError(f"steps must be a 2-D array [samples, channels], got shape {tuple(s.shape)}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if s.numel() and (int(s.min()) < -1 or int(s.max()) >= n_steps):
        raise ValueError(f"steps must lie in [-1, {n_steps - 1}] (-1: no spike), got [{int(s.min())}, {int(s.max())}]")
    out = torch.zeros(int(n_steps), *s.shape)
    n, c = (s >= 0).nonzero(as_tuple=True)
    out[s[n, c], n, c] = 1.0
    return out


def rate_encode(
    x: Tensor | np.ndarray, n_steps: int, max_rate: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Bernoulli rate code: [n_steps, *x.shape] float32 spikes, each step independently 1 with probability
    ``max_rate * x`` (x in [0, 1]; ``max_rate`` in (0, 1]). Pass a seeded ``generator`` for reproducibility."""
    p = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
    if p.numel() and (torch.isnan(p).any() or float(p.min()) < 0.0 or float(p.max()) > 1.0):
        raise ValueError("x must hold values in [0, 1] (no NaN)")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if not 0.0 < max_rate <= 1.0:
        raise ValueError(f"max_rate must be in (0, 1], got {max_rate!r}")
    probs = (max_rate * p).expand(int(n_steps), *p.shape)
    return torch.bernoulli(probs, generator=generator)
