"""DECOLLE layers (Kaiser, Mostafa & Neftci 2020): LIF neurons with P, Q, R traces and a fixed random local
readout, run one time step at a time with the state detached at every step.

One step of a layer with input spikes S_in (docs/extensions.md, "DECOLLE"; the settings of DECOLLE's DVS-Gesture run):
    Q <- beta Q + (1 - beta) S_in            synaptic trace          (beta = 0.92)
    P <- alpha P + (1 - alpha) Q             membrane trace          (alpha = 0.97)
    R <- alpha_rp R - (1 - alpha_rp) w_rp S  refractory trace, S the previous step's spikes (0.65, 1)
    U  = W P + b + R,   S = H(U)             spike when U > 0; backward through the surrogate gradient
    s  = pool(S)                             (max pooling, convolutional layers; the layer's output)
    y  = G s                                 fixed random readout (never trained), the local prediction
The surrogate is DECOLLE's fast sigmoid 1/(10 |U| + 1)^2, i.e. spikestab's fast sigmoid with dampening 1
and sharpness 5. Every state tensor (P, Q, R, S) enters a step detached, and the layer's output ``s`` is
passed on detached by the network: the gradient of a layer's local loss reaches only that layer's W and b,
and only through the current step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient

__all__ = ["DecolleLayer", "DecolleState", "decolle_surrogate"]


class DecolleState(NamedTuple):
    """P, Q, R traces and the last spikes S of one layer (shapes of its input / its output)."""

    p: Tensor
    q: Tensor
    r: Tensor
    s: Tensor


def decolle_surrogate() -> SurrogateGradient:
    """DECOLLE's FastSigmoid surrogate 1/(10|u| + 1)^2 as a spikestab surrogate (dampening 1, sharpness 5)."""
    return SurrogateGradient("fast-sigmoid", 1.0, 5.0)


def _decay(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


class DecolleLayer(nn.Module):
    """One DECOLLE layer around ``base`` (an ``nn.Linear`` or ``nn.Conv2d``) with max pooling ``pool`` (conv
    only) and a fixed random readout to ``n_classes`` outputs (uniform, +-lc_ampl / sqrt(fan_in))."""

    def __init__(
        self,
        base: nn.Linear | nn.Conv2d,
        out_shape: tuple[int, ...],
        n_classes: int,
        *,
        pool: int = 1,
        alpha: float = 0.97,
        beta: float = 0.92,
        alpha_rp: float = 0.65,
        w_rp: float = 1.0,
        lc_ampl: float = 0.5,
        spike_fn: SurrogateGradient | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"base must be an nn.Linear or nn.Conv2d, got {type(base).__name__}")
        if not isinstance(pool, int) or pool < 1 or (pool > 1 and isinstance(base, nn.Linear)):
            raise ValueError(f"pool must be an integer >= 1 (1 for dense layers), got {pool!r}")
        if not (isinstance(n_classes, int) and n_classes >= 1):
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.base = base
        self.alpha, self.beta = _decay("alpha", alpha), _decay("beta", beta)
        self.alpha_rp = _decay("alpha_rp", alpha_rp)
        self.w_rp = float(w_rp)
        self.spike_fn = spike_fn if spike_fn is not None else decolle_surrogate()
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        self.out_shape = tuple(out_shape)  # shape of the pooled output per example
        fan_in = math.prod(self.out_shape)
        self.readout = nn.Linear(fan_in, n_classes)
        bound = lc_ampl / math.sqrt(fan_in)
        nn.init.uniform_(self.readout.weight, -bound, bound)
        nn.init.uniform_(self.readout.bias, -bound, bound)
        self.readout.requires_grad_(False)  # fixed random local readout

    def init_state(self, x: Tensor) -> DecolleState:
        """Zero traces for an input batch like ``x`` (one time step)."""
        with torch.no_grad():
            s = self.base(torch.zeros_like(x))
        return DecolleState(torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(s), torch.zeros_like(s))

    def forward(self, x: Tensor, state: DecolleState) -> tuple[Tensor, Tensor, Tensor, DecolleState]:
        """One step: (pooled spikes s, local readout y, membrane U, new state); ``state`` is detached here."""
        p, q, r, s_prev = (t.detach() for t in state)
        q = self.beta * q + (1.0 - self.beta) * x
        p = self.alpha * p + (1.0 - self.alpha) * q
        r = self.alpha_rp * r - (1.0 - self.alpha_rp) * self.w_rp * s_prev
        u = self.base(p) + r
        s = self.spike_fn(u)
        pooled = self.pool(s)
        y = self.readout(pooled.flatten(1))
        return pooled, y, u, DecolleState(p, q, r, s)
