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
# "event" first: both time loops in C wherever they can run (CPU float32, C compiler), the torch loop
# of "fused" elsewhere (run_event falls back by itself); faster than the torch loop for sparse and dense
# spikes alike (docs/results/kernels.md, "Event-driven path, v2")
AUTO_ORDER: list[str] = ["event", "fused", "reference"]


def select(backend: str) -> Kernel:
    """The kernel for ``backend`` ("auto" picks the first available in ``AUTO_ORDER``)."""
    if backend == "auto":
        backend = next(b for b in AUTO_ORDER if b in BACKENDS)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def sparse_projection(x: Tensor, weight: Tensor, bias: Tensor, backend: str) -> bool:
    """Whether ``prepare`` computes x W^T + b from the non-zeros of x: always for "event", for "auto"
    when the measured density of x is at most ``sparse.EVENT_DENSITY``; only where the C loops can
    run on these tensors."""
    if backend not in ("auto", "event") or not sparse.available(x, weight, bias):
        return False
    return backend == "event" or sparse.density(x) <= sparse.EVENT_DENSITY


def prepare(x: Tensor, weight: Tensor, bias: Tensor, backend: str,
            sparse_x: bool | None = None) -> tuple[Tensor, Kernel]:
    """The input current x W^T + b of all steps and the kernel to run it with (``select(backend)``).

    The projection is event-driven when ``sparse_x`` is true, dense when false, and chosen by
    :func:`sparse_projection` when None (callers that run one sequence in pieces decide once for
    the whole sequence and pass the answer, so that every piece computes the same way).
    """
    kernel = select(backend)
    if sparse_x is None:
        sparse_x = sparse_projection(x, weight, bias, backend)
    if sparse_x:
        return sparse.event_linear(x, weight, bias), kernel
    return torch.nn.functional.linear(x, weight, bias), kernel
