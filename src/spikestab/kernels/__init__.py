"""Sequence kernels for LIF/ALIF layers, one module per job:

- ``reference``: the plain autograd loop (ground truth);
- ``fused``: the torch time loop with a hand-written BPTT backward;
- ``event``: both time loops in C (autograd Function + the ctypes calls);
- ``sparse``: the event-driven (CSR) products of the input projection;
- ``dispatch``: which backend runs (``select``, ``prepare``);
- ``checkpoint``: segment checkpointing over time;
- ``build`` / ``cabi``: compiling, caching and calling the C sources of ``csrc/``.
"""

from . import sparse
from .dispatch import BACKENDS, Kernel, prepare, run_auto, select, sparse_projection
from .event import run_event
from .fused import run_fused
from .reference import run_reference

__all__ = [
    "BACKENDS",
    "Kernel",
    "prepare",
    "run_auto",
    "run_event",
    "run_fused",
    "run_reference",
    "select",
    "sparse",
    "sparse_projection",
]
