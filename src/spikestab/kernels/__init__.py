"""Sequence kernels for LIF/ALIF layers. ``reference`` is the plain autograd loop.

Backends register themselves in ``BACKENDS``; ``select`` resolves ``"auto"`` to the fastest one
that supports the given configuration.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..neurons.functional import Dynamics, NeuronState
from . import sparse
from .fused import run_event, run_fused
from .reference import run_reference

Kernel = Callable[[Tensor, "Tensor | None", Dynamics, NeuronState, bool], "tuple[Tensor, Tensor | None, NeuronState]"]

BACKENDS: dict[str, Kernel] = {"reference": run_reference, "fused": run_fused, "event": run_event}
AUTO_ORDER: list[str] = ["fused", "reference"]


def select(backend: str) -> Kernel:
    """The kernel for ``backend`` ("auto" picks the first available in ``AUTO_ORDER``)."""
    if backend == "auto":
        backend = next(b for b in AUTO_ORDER if b in BACKENDS)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def prepare(x: Tensor, weight: Tensor, bias: Tensor, backend: str) -> tuple[Tensor, Kernel]:
    """The input current x W^T + b of all steps and the kernel to run it with.

    "event" always, and "auto" when the measured density of x is at most ``sparse.EVENT_DENSITY``,
    use the event-driven path if the C loops can run on these tensors (CPU float32, compiler
    present): event-driven input projection and ``run_event`` (both time loops in C). Otherwise the
    dense projection and ``select(backend)``. (The C loops also beat the torch loop for dense input,
    docs/results/kernels.md; ``kernels.checkpoint.segment_backend`` mirrors this rule, so both would
    change together.)
    """
    kernel = select(backend)
    if backend in ("auto", "event") and sparse.available(x, weight, bias):
        if backend == "event" or sparse.density(x) <= sparse.EVENT_DENSITY:
            return sparse.event_linear(x, weight, bias), run_event
    return torch.nn.functional.linear(x, weight, bias), kernel
