"""Where the kernels run: the kernel a layer runs for a device and dtype, and the device of an option.

The C loops and products (backend "native") take CPU float32 tensors only; everywhere else (CUDA, any
other device, float64, ...) backend "auto" runs the fused torch loop, whose forward and backward are
plain torch operations on the layer's own device. :func:`path_for` names the kernel, so that a run can
record which one ran; :func:`resolve_device` turns a device option ("auto", "cpu", "cuda", "cuda:N")
into a ``torch.device``, or a clear error before any work.
"""

from __future__ import annotations

import torch

from . import sparse
from .dispatch import select

__all__ = ["NATIVE", "PATHS", "path_for", "resolve_device"]

NATIVE = "native"  # the backend of the C loops
# the kernels a layer can run, as ``path_for`` names them: the C loops, the torch loop, the autograd loop
PATHS = (NATIVE, "fused", "reference")


def path_for(device: torch.device | str, dtype: torch.dtype = torch.float32, backend: str = "auto") -> str:
    """The kernel (one of ``PATHS``) a layer of ``backend`` runs on tensors of ``device`` and ``dtype``:
    "auto" takes the C loops on the CPU in float32 with the native library built, "fused" (the torch
    loop) elsewhere; "fused" and "reference" run anywhere. A layer whose SG dampening / sharpness or
    ALIF rho / beta learn runs "reference" on every backend (``fused.needs_reference``). ValueError for
    an unknown backend, and for the C loops' backend where they cannot run."""
    select(backend)  # validates the name
    native = sparse.native_kind(device, dtype) and sparse.runs_natively()
    if backend == "auto":
        return NATIVE if native else "fused"
    if backend not in ("fused", "reference") and not native:
        raise ValueError(
            f"backend {backend!r} runs the C loops, on CPU float32 tensors with the native library built, "
            f"not on {torch.device(device)} {dtype}; backend 'auto' takes the torch loop there"
        )
    return backend if backend in PATHS else NATIVE


def resolve_device(device: torch.device | str) -> torch.device:
    """The ``torch.device`` of a device option: "auto" (CUDA when torch sees it, else the CPU), "cpu",
    "cuda", "cuda:N", any other device torch knows ("meta", ...) or a ``torch.device``. ValueError naming
    the accepted values for a name torch does not know and for a CUDA device torch does not see, so that
    a run asking for a GPU stops before any work."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} ({err})") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {device!r} asks for CUDA, but torch sees no CUDA device here; use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {device!r}: torch sees {count} CUDA device(s), accepted cuda:0 .. cuda:{count - 1}"
            )
    return dev
