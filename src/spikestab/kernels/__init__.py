"""Sequence kernels for LIF/ALIF layers. ``reference`` is the plain autograd loop.

Backends register themselves in ``BACKENDS``; ``select`` resolves ``"auto"`` to the fastest one
that supports the given configuration.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from ..neurons.functional import Dynamics, NeuronState
from .fused import run_fused
from .reference import run_reference

Kernel = Callable[[Tensor, "Tensor | None", Dynamics, NeuronState, bool], "tuple[Tensor, Tensor | None, NeuronState]"]

BACKENDS: dict[str, Kernel] = {"reference": run_reference, "fused": run_fused}
AUTO_ORDER: list[str] = ["fused", "reference"]


def select(backend: str) -> Kernel:
    """The kernel for ``backend`` ("auto" picks the first available in ``AUTO_ORDER``)."""
    if backend == "auto":
        backend = next(b for b in AUTO_ORDER if b in BACKENDS)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]
