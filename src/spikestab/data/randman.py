"""Randman spike-timing task (Zenke and Vogels 2021, "The remarkable robustness of surrogate gradient
learning", Neural Computation 33(4)); our own implementation of the published construction.

Each class is a random smooth manifold of dimension ``dim`` embedded in ``n_units`` dimensions: embedding
coordinate i is the product over manifold coordinates j of a 1-D random Fourier series
``sum_k a_ijk / (k+1)^alpha * sin(2 pi (k f_ijk x_j + phi_ijk))``, k = 0..F-1 with F = ceil(prec^(-1/alpha))
and a, f, phi ~ U(0, 1), the constant k = 0 term removed. Points x ~ U[0, 1]^dim are mapped through it,
each class is min-max scaled to [0, 1] per unit, and unit u fires exactly once, at step
``floor(value * n_steps * step_frac)`` (capped at n_steps - 1). Only spike timing carries the class.
"""

from __future__ import annotations

import math

import numpy as np


def _manifold(rng: np.random.Generator, n_units: int, dim: int, alpha: float, prec: float):
    n_freq = int(math.ceil(prec ** (-1.0 / alpha)))
    amp, freq, phase = rng.uniform(size=(3, n_units, dim, n_freq))
    amp[..., 0] = 0.0  # no constant term
    k = np.arange(n_freq)
    weight = amp / (k + 1.0) ** alpha

    def evaluate(x: np.ndarray) -> np.ndarray:  # x [n, dim] -> [n, n_units]
        waves = np.sin(2 * np.pi * (x[:, None, :, None] * k * freq + phase))  # [n, units, dim, F]
        return np.prod((weight * waves).sum(-1), axis=-1)

    return evaluate


def spiking_randman(
    n_classes: int = 10,
    n_units: int = 20,
    n_steps: int = 100,
    dim: int = 1,
    alpha: float = 2.0,
    samples_per_class: int = 1000,
    step_frac: float = 1.0,
    prec: float = 1e-3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a shuffled Randman data set: ``(latencies [n, n_units] int32, labels [n] int64)``, with
    ``latencies[i, u]`` the single step at which unit u fires in sample i. Same arguments, same data."""
    checks = {
        "n_classes": (n_classes, 2),
        "n_units": (n_units, 1),
        "n_steps": (n_steps, 1),
        "dim": (dim, 1),
        "samples_per_class": (samples_per_class, 2),
    }
    for name, (value, low) in checks.items():
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0 < step_frac <= 1:
        raise ValueError(f"step_frac must lie in (0, 1], got {step_frac}")
    if not 0 < prec < 1:
        raise ValueError(f"prec must lie in (0, 1), got {prec}")
    rng = np.random.default_rng(seed)
    values, labels = [], []
    for c in range(n_classes):
        y = _manifold(rng, n_units, dim, alpha, prec)(rng.uniform(size=(samples_per_class, dim)))
        lo, hi = y.min(0), y.max(0)
        values.append((y - lo) / np.where(hi > lo, hi - lo, 1.0))
        labels.append(np.full(samples_per_class, c, dtype=np.int64))
    order = rng.permutation(n_classes * samples_per_class)
    steps = np.floor(np.concatenate(values)[order] * n_steps * step_frac).astype(np.int64)
    return np.minimum(steps, n_steps - 1).astype(np.int32), np.concatenate(labels)[order]
