"""Which kernel runs a layer's sequence, and how its input projection is computed.

Backends (the ``backend`` argument of the layers):

- ``"reference"``: ``run_reference``, the plain autograd loop (the ground truth of the tests);
- ``"fused"``: ``run_fused``, the torch time loop with a hand-written BPTT backward (any device/dtype);
- ``"native"``: ``run_native``, both time loops in C (CPU float32; raises where it cannot run); its old
  name ``"event"`` (it runs dense spikes too) is read as ``"native"`` with a DeprecationWarning for one
  release (``canonical_backend``);
- ``"auto"`` (default): ``run_auto``, the "native" kernel where it can run, the "fused" one elsewhere,
  because the C loops are faster than the torch loop for sparse and dense spikes alike
  (docs/results/kernels.md, "Event-driven path, v2").

The fused kernels defer to ``run_reference`` when a parameter needs a gradient their backward does not
compute (a learnable SG dampening or sharpness, ALIF's rho/beta): ``kernels.fused.needs_reference``.

The input projection x W^T + b is event-driven (``sparse.event_linear``, from the non-zeros of x) for
"native", and for "auto" when the measured density of x is at most ``sparse.EVENT_DENSITY``; dense
(``torch.nn.functional.linear``) otherwise, and wherever the native products cannot run on x.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..dynamics import Dynamics, NeuronState
from . import sparse
from .fused import run_fused
from .native import native_blocker, run_native
from .reference import run_reference

__all__ = ["BACKENDS", "Kernel", "canonical_backend", "prepare", "run_auto", "select", "sparse_projection"]

Kernel = Callable[[Tensor, "Tensor | None", Dynamics, NeuronState, bool], "tuple[Tensor, Tensor | None, NeuronState]"]


def run_auto(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """``run_native`` where the C loops can run on these tensors, ``run_fused`` elsewhere."""
    kernel = run_native if native_blocker(current, weight_hh, dyn, state) is None else run_fused
    return kernel(current, weight_hh, dyn, state, return_voltage)


BACKENDS: dict[str, Kernel] = {"auto": run_auto, "native": run_native, "fused": run_fused, "reference": run_reference}
OLD_BACKENDS = {"event": "native"}  # old name -> current one, read for one release


def canonical_backend(backend: str) -> str:
    """``backend`` under its current name: an old one (``OLD_BACKENDS``) with a DeprecationWarning naming
    the new one; other names unchanged."""
    new = OLD_BACKENDS.get(backend)
    if new is None:
        return backend
    warnings.warn(
        f"backend {backend!r} is deprecated and will be removed in the next release; use {new!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return new


def select(backend: str) -> Kernel:
    """The kernel of ``backend`` (one of ``BACKENDS``, or an old name); ValueError naming the accepted
    ones otherwise."""
    backend = canonical_backend(backend)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def sparse_projection(x: Tensor, weight: Tensor, bias: Tensor, backend: str) -> bool:
    """Whether ``prepare`` computes x W^T + b from the non-zeros of x: always for "native", for "auto"
    when the measured density of x is at most ``sparse.EVENT_DENSITY``; only where the native products
    can run on these tensors."""
    backend = OLD_BACKENDS.get(backend, backend)  # select() warns about an old name
    if backend not in ("auto", "native") or not sparse.runs_natively(x, weight, bias):
        return False
    return backend == "native" or sparse.density(x) <= sparse.EVENT_DENSITY


def prepare(
    x: Tensor, weight: Tensor, bias: Tensor, backend: str, sparse_x: bool | None = None
) -> tuple[Tensor, Kernel]:
    """The input current x W^T + b of all steps and the kernel to run it with (``select(backend)``).

    The projection is event-driven when ``sparse_x`` is true, dense when false, and chosen by
    :func:`sparse_projection` when None (callers that run one sequence in pieces decide once for
    the whole sequence and pass the answer, so that every piece computes the same way). A sparse COO x
    (a batch of spikes, ``data.SpikeLoader(sparse=True)``) is read as its dense form: the event-driven
    projection takes its non-zeros as they are, the dense one (and a gradient for x) its ``to_dense()``.
    """
    kernel = select(backend)
    if sparse_x is None:
        sparse_x = sparse_projection(x, weight, bias, backend)
    if x.is_sparse and (not sparse_x or x.requires_grad):
        x = x.to_dense()
    if sparse_x:
        return sparse.event_linear(x, weight, bias), kernel
    return torch.nn.functional.linear(x, weight, bias), kernel
