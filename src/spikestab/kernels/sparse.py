"""Event-driven (CSR) products for spiking layers on CPU: ``x @ W^T`` and its weight gradient from the
non-zeros of x only.

Spikes are binary and mostly zeros (inputs ~5%, hidden a few %), so ``x @ W^T`` only needs the weight
rows of the active inputs, and the weight gradient ``g^T x`` only the gradient rows of the active
entries. :func:`nonzeros` builds a compressed-row index of x; :func:`sparse_mm` and :func:`sparse_mm_t`
are the two products (C, ``csrc/products.c``, OpenMP over ``torch.get_num_threads()`` threads), and
:func:`event_linear` is ``torch.nn.functional.linear`` built from them. :func:`available` says whether
they can run on given tensors (CPU float32, native library built: ``kernels.build``).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
from torch import Tensor

from . import cabi

__all__ = [
    "EVENT_DENSITY",
    "HIDDEN_EVENT_DENSITY",
    "NonZeros",
    "coo_nonzeros",
    "density",
    "event_linear",
    "flat_positions",
    "native_kind",
    "runs_natively",
    "nonzeros",
    "sparse_mm",
    "sparse_mm_t",
]

# Below this fraction of non-zero inputs the event-driven input projection (index + product + weight
# gradient) costs less CPU than the dense one; the measured crossover is 15-20 % (docs/results/kernels.md,
# "Event-driven path, v2").
EVENT_DENSITY = 0.15
# The same for the recurrent weight gradient from the hidden spikes: crossover 20-30 % (same section).
HIDDEN_EVENT_DENSITY = 0.2


def native_kind(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the C kernels take tensors of this device and dtype: the CPU and float32 only."""
    return torch.device(device).type == "cpu" and dtype == torch.float32


def runs_natively(*tensors: Tensor | None) -> bool:
    """True when the C kernels can run on these tensors: all of the ``native_kind`` (CPU float32; None is
    ignored) and the native library built and loaded."""
    ok = all(native_kind(t.device, t.dtype) for t in tensors if t is not None)
    return ok and cabi.library() is not None


def density(x: Tensor) -> float:
    """Fraction of non-zero entries, estimated on evenly spaced rows (last dimension kept whole: a
    contiguous read) holding about 65k entries; the same rows and the same number for a sparse COO x."""
    if x.is_sparse:
        return _coo_density(x)
    rows = x.reshape(-1, x.shape[-1]) if x.dim() > 0 else x.reshape(1, 1)
    sample = rows[:: _row_step(rows.shape[0], rows.shape[1])]
    return sample.count_nonzero().item() / max(sample.numel(), 1)


def _row_step(rows: int, n: int) -> int:
    """Every how many rows ``density`` reads one."""
    return max(1, rows // max(1, 65536 // max(n, 1)))


def _coo_density(x: Tensor) -> float:
    n = x.shape[-1]
    rows = x.numel() // max(n, 1)
    step = _row_step(rows, n)
    x = x.coalesce()
    row = flat_positions(x.indices(), tuple(x.shape)) // max(n, 1)
    count = int(((row % step == 0) & (x.values() != 0)).sum())
    return count / max(-(-rows // step) * n, 1)


def flat_positions(indices: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The row-major flat position of every column of a COO ``indices`` [ndim, nnz] in a tensor of ``shape``
    (increasing for coalesced indices)."""
    flat, stride = torch.zeros_like(indices[0]), 1
    for d in reversed(range(len(shape))):
        flat += indices[d] * stride
        stride *= shape[d]
    return flat


class NonZeros(NamedTuple):
    """Compressed-row index of a matrix [R, N]: row pointers (int64 [R + 1]), then the column (int32)
    and value (float32) of each non-zero, rows in order, columns increasing."""

    rowptr: Tensor
    cols: Tensor
    vals: Tensor
    shape: tuple[int, int]


def _csr(x: NonZeros) -> cabi.Csr:
    return cabi.Csr(x.shape[0], x.shape[1], cabi.ptr(x.rowptr), cabi.ptr(x.cols), cabi.ptr(x.vals))


_INDEX_CHUNK = 1 << 22  # entries of x indexed per C call: bounds the scratch to 32 MiB


def nonzeros(x: Tensor) -> NonZeros:
    """The non-zeros of x [R, N] (contiguous float32), indexed in chunks of rows."""
    rows, n = x.shape
    step = max(1, _INDEX_CHUNK // max(n, 1))
    rowptr = torch.zeros(rows + 1, dtype=torch.int64, device=x.device)
    # room for every entry of a chunk: only the pages written (about nnz entries) are touched
    size = min(rows, step) * n
    cols_buf = torch.empty(size, dtype=torch.int32, device=x.device)
    vals_buf = torch.empty(size, dtype=x.dtype, device=x.device)
    cols, vals, base = [], [], 0
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        ptr = rowptr[r0 : r1 + 1]
        count = ctypes.c_int64(0)
        csr = cabi.Csr(r1 - r0, n, cabi.ptr(ptr), cabi.ptr(cols_buf), cabi.ptr(vals_buf))
        cabi.call("spk_csr_build", cabi.ptr(x[r0:r1]), ctypes.byref(csr), ctypes.byref(count), cabi.threads())
        nnz = count.value
        ptr += base  # the C call counts from zero
        cols.append(cols_buf[:nnz].clone())
        vals.append(vals_buf[:nnz].clone())
        base += nnz
    if not cols:
        return NonZeros(rowptr, cols_buf[:0].clone(), vals_buf[:0].clone(), (rows, n))
    return NonZeros(rowptr, torch.cat(cols), torch.cat(vals), (rows, n))


def coo_nonzeros(x: Tensor) -> NonZeros:
    """The compressed-row index of a sparse COO x [..., N] seen as [R, N] (R the product of the leading
    sizes): what ``nonzeros(x.to_dense().reshape(-1, N))`` gives, without the dense tensor."""
    x = x.coalesce()
    n = x.shape[-1]
    rows = x.numel() // max(n, 1)
    vals = x.values()
    keep = vals != 0
    flat = flat_positions(x.indices(), tuple(x.shape))[keep]
    row = flat // n
    rowptr = torch.zeros(rows + 1, dtype=torch.int64, device=x.device)
    rowptr[1:] = torch.bincount(row, minlength=rows).cumsum(0)
    return NonZeros(rowptr, (flat - row * n).to(torch.int32), vals[keep].contiguous(), (rows, n))


def sparse_mm(x: NonZeros, wt: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [R, N] @ wt [N, H] (+ bias [H]) from the non-zeros of x (wt, bias contiguous float32); each
    output sums its terms from zero in column order, then adds the bias."""
    out = torch.empty(x.shape[0], wt.shape[1], dtype=wt.dtype, device=wt.device)
    cabi.call(
        "spk_csr_mm", ctypes.byref(_csr(x)), cabi.ptr(wt), wt.shape[1], cabi.ptr(bias), cabi.ptr(out), cabi.threads()
    )
    return out


def sparse_mm_t(x: NonZeros, g: Tensor) -> Tensor:
    """x [R, N]^T @ g [R, H] -> [N, H] from the non-zeros of x (g contiguous float32)."""
    out = torch.empty(x.shape[1], g.shape[1], dtype=g.dtype, device=g.device)
    cabi.call("spk_csr_mm_t", ctypes.byref(_csr(x)), cabi.ptr(g), g.shape[1], cabi.ptr(out), cabi.threads())
    return out


class _EventLinear(torch.autograd.Function):
    """x W^T + b for a sparse x: forward and weight gradient visit only the non-zeros of x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        nz = coo_nonzeros(x) if x.is_sparse else nonzeros(x.reshape(-1, x.shape[-1]).contiguous())
        out = sparse_mm(nz, weight.t().contiguous(), bias.contiguous())
        ctx.save_for_backward(weight)
        ctx.nz, ctx.x_shape = nz, x.shape
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        g2 = grad.reshape(-1, weight.shape[0]).contiguous()
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = (g2 @ weight).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            g_w = sparse_mm_t(ctx.nz, g2).t()
        if ctx.needs_input_grad[2]:
            g_b = g2.sum(0)
        return g_x, g_w, g_b


def event_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` computed from the non-zeros of x only (x dense, or a
    sparse COO tensor that needs no gradient)."""
    return _EventLinear.apply(x, weight, bias)
