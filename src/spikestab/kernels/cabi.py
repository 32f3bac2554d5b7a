"""The ctypes mirror of ``csrc/spikestab.h``: one :class:`ctypes.Structure` per C struct, the signatures
of the entry points, and :func:`call`, which turns a failed status into an exception.

Each struct is filled by field name, so a miscounted or reordered argument cannot shift the others; on
load the struct sizes are compared with the C compiler's (``spk_abi_size``), and a mismatch disables the
library (with a warning) instead of letting a call write outside its arguments.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from typing import Any

import torch
from torch import Tensor

from . import build

__all__ = ["Csr", "ForwardArgs", "BackwardArgs", "DropoutArgs", "library", "call", "ptr", "threads"]

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_I32 = ctypes.c_int32
_F32 = ctypes.c_float


def _fields(*groups: list) -> list[tuple[str, Any]]:
    """A Structure's ``_fields_``: the groups of (name, ctypes type) concatenated, in order."""
    return [field for group in groups for field in group]


class Csr(ctypes.Structure):
    """``spk_csr``: compressed rows of a matrix [rows, n]."""

    _fields_ = [("rows", _I64), ("n", _I64), ("rowptr", _P), ("cols", _P), ("vals", _P)]


class ForwardArgs(ctypes.Structure):
    """``spk_forward_args``: the forward time loop's arrays and settings (see the header)."""

    _fields_ = _fields(
        [("T", _I64), ("B", _I64), ("H", _I64)],
        [
            (name, _P)
            for name in (
                "current",
                "wt",
                "alpha",
                "threshold",
                "rho",
                "beta",
                "v0",
                "z0",
                "a0",
                "volts",
                "spikes",
                "thresholds",
                "pre_reset",
                "a_out",
            )
        ],
        [("spikes_before_last", _I64), ("reset", _I32), ("threads", _I32)],
    )


class BackwardArgs(ctypes.Structure):
    """``spk_backward_args``: the backward time loop's arrays and settings (see the header)."""

    _fields_ = _fields(
        [("T", _I64), ("B", _I64), ("H", _I64)],
        [
            (name, _P)
            for name in (
                "w",
                "alpha",
                "threshold",
                "rho",
                "beta",
                "volts",
                "spikes",
                "thresholds",
                "pre_reset",
                "v0",
                "z0",
                "g_spikes",
                "g_volts",
                "g_vT",
                "g_zT",
                "g_aT",
                "work",
                "g_alpha",
                "g_thr",
                "g_v0",
                "g_z0",
                "g_a0",
            )
        ],
        [
            ("sg_nonzero", _I64),
            ("sparse_rows", _I64),
            ("sg_dampening", _F32),
            ("sg_sharpness", _F32),
            ("sparse_below", _F32),
            ("sg_shape", _I32),
            ("reset", _I32),
            ("grad_reset", _I32),
            ("threads", _I32),
        ],
    )


class DropoutArgs(ctypes.Structure):
    """``spk_dropout_args``: dropout with torch's mt19937 draws (``kernels.dropout``)."""

    _fields_ = [
        ("n", _I64),
        ("nnz", _I64),
        ("index", _P),
        ("x", _P),
        ("out", _P),
        ("kept", _P),
        ("mt", _P),
        ("keep", ctypes.c_double),
        ("left", _I32),
        ("next", ctypes.c_uint32),
        ("scale", _F32),
    ]


# the order of enum spk_abi in the header
_ABI = (Csr, ForwardArgs, BackwardArgs, DropoutArgs)
_SIGNATURES = {
    "spk_abi_size": ([_I32], ctypes.c_size_t),
    "spk_lif_forward": ([ctypes.POINTER(ForwardArgs)], ctypes.c_int),
    "spk_lif_backward": ([ctypes.POINTER(BackwardArgs)], ctypes.c_int),
    "spk_csr_build": ([_P, ctypes.POINTER(Csr), ctypes.POINTER(_I64), _I32], ctypes.c_int),
    "spk_csr_mm": ([ctypes.POINTER(Csr), _P, _I64, _P, _P, _I32], ctypes.c_int),
    "spk_csr_mm_t": ([ctypes.POINTER(Csr), _P, _I64, _P, _I32], ctypes.c_int),
    "spk_dropout": ([ctypes.POINTER(DropoutArgs)], ctypes.c_int),
}
_STATUS = {1: "a scratch allocation of the native kernels failed (out of memory)"}

_lock = threading.Lock()
_configured: ctypes.CDLL | None = None
_checked = False


def library() -> ctypes.CDLL | None:
    """The native library with its signatures set and its struct layout checked; None when it cannot be
    built (``build.failure()`` says why) or its layout differs from these structs."""
    global _configured, _checked
    with _lock:
        if not _checked:
            _checked = True
            lib = build.library()
            if lib is not None:
                for name, (args, res) in _SIGNATURES.items():
                    fn = getattr(lib, name)
                    fn.argtypes, fn.restype = args, res
                sizes = {s.__name__: (ctypes.sizeof(s), lib.spk_abi_size(i)) for i, s in enumerate(_ABI)}
                bad = {k: v for k, v in sizes.items() if v[0] != v[1]}
                if bad:
                    warnings.warn(
                        f"spikestab: the native kernels' structs differ from their ctypes mirror "
                        f"(python, C bytes: {bad}); the torch time loop (backend 'fused') runs instead",
                        build.NativeBuildWarning,
                        stacklevel=2,
                    )
                else:
                    _configured = lib
        return _configured


def call(name: str, *args) -> None:
    """Call entry point ``name``; raise MemoryError when it reports a failed allocation."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the native kernels are not available: {build.failure() or 'ABI mismatch'}")
    status = getattr(lib, name)(*args)
    if status != 0:
        raise MemoryError(f"{name}: {_STATUS.get(status, f'status {status}')}")


def ptr(t: Tensor | None) -> int | None:
    """The address of a tensor's memory (None for None: a NULL pointer)."""
    return None if t is None else t.data_ptr()


def threads() -> int:
    """OpenMP threads per call: torch's intra-op thread count."""
    return torch.get_num_threads()
