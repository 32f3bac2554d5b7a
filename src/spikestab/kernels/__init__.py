"""Sequence kernels for LIF/ALIF layers, one module per job:

- ``reference``: the plain autograd loop (ground truth);
- ``fused``: the torch time loop with a hand-written BPTT backward;
- ``native``: both time loops in C (autograd Function + the ctypes calls);
- ``sparse``: the event-driven (CSR) products of the input projection;
- ``dispatch``: which backend runs (``select``, ``prepare``);
- ``segments``: recomputing a layer's time loop in segments during backward (gradient checkpointing);
- ``build`` / ``cabi``: compiling, caching and calling the C sources of ``csrc/``.
"""

from . import sparse
from .dispatch import BACKENDS, Kernel, canonical_backend, prepare, run_auto, select, sparse_projection
from .fused import run_fused
from .native import run_native
from .reference import run_reference

__all__ = [
    "BACKENDS",
    "Kernel",
    "canonical_backend",
    "prepare",
    "run_auto",
    "run_fused",
    "run_native",
    "run_reference",
    "select",
    "sparse",
    "sparse_projection",
]
