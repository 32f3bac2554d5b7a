"""Dropout with torch's own random draws, in one C pass (``csrc/dropout.c``).

``torch.nn.functional.dropout`` on the CPU draws its keep mask with ``bernoulli_`` from the default
generator's mt19937 stream, one entry at a time through torch's dispatch; on a spiking network's input (a
[T, B, N] raster, mostly zeros) that is a third to a half of a training epoch
(benchmarks/results/profile_epoch.md). :func:`dropout` draws the same mask from the same stream in C and
forms the same product, bit for bit, and leaves the generator where torch's call would: training gives
the same weights with either for the same seed. Where the input needs no gradient, the draws of its zero
entries are skipped rather than tempered (their output is the zero itself).

It runs where the draws it reproduces are torch's: checked once per process against torch's dropout on a
small tensor (torch's builds with MKL draw differently on Intel CPUs), on contiguous CPU float32 tensors in
training with the native library built (``kernels.build``). Everywhere else it is torch's dropout.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch
from torch import Tensor

from . import cabi
from .sparse import flat_positions

__all__ = ["dropout", "reproduces_torch", "runs_exactly"]

# torch's CPU generator state (torch.get_rng_state()): the legacy THGeneratorState (seed, left, seeded,
# next, the 624 mt19937 words as uint64, the normal-sample cache) and the float normal-sample cache
_STATE_BYTES = 5056
_LEFT, _NEXT, _MT, _WORDS = 8, 16, 24, 624


def _scale(p: float) -> float:
    """The float32 1 / (1 - p) that torch's dropout multiplies the kept entries by (``noise.div_(1 - p)``)."""
    return torch.ones(1, device="cpu").div_(1.0 - p).item()


def _advance(n: int, x: Tensor, out: Tensor, kept: Tensor | None, index: Tensor | None, p: float) -> None:
    """The C pass over a tensor of n entries (x, out, kept: its entries, or those at the flat positions
    ``index``), drawing from the default CPU generator and advancing it as torch's dropout would."""
    state = torch.get_rng_state().numpy().copy()
    mt = state[_MT : _MT + 8 * _WORDS].view(np.uint64).astype(np.uint32)
    args = cabi.DropoutArgs(
        n=n,
        nnz=0 if index is None else index.numel(),
        index=cabi.ptr(index),
        x=cabi.ptr(x),
        out=cabi.ptr(out),
        kept=cabi.ptr(kept),
        mt=mt.ctypes.data,
        keep=1.0 - p,
        left=int(state[_LEFT : _LEFT + 4].view(np.int32)[0]),
        next=int(state[_NEXT : _NEXT + 8].view(np.uint64)[0]),
        scale=_scale(p),
    )
    cabi.call("spk_dropout", ctypes.byref(args))
    state[_LEFT : _LEFT + 4] = np.array([args.left], np.int32).view(np.uint8)
    state[_NEXT : _NEXT + 8] = np.array([args.next], np.uint64).view(np.uint8)
    state[_MT : _MT + 8 * _WORDS] = mt.astype(np.uint64).view(np.uint8)
    torch.set_rng_state(torch.from_numpy(state))


def _draw(x: Tensor, p: float, with_mask: bool) -> tuple[Tensor, Tensor | None]:
    """(x * noise, the keep mask as uint8 or None) of a dense x."""
    out = torch.empty_like(x)
    kept = torch.empty(x.shape, dtype=torch.uint8, device=x.device) if with_mask else None
    _advance(x.numel(), x, out, kept, None, p)
    return out, kept


def _draw_sparse(x: Tensor, p: float) -> Tensor:
    """The dropout of a sparse COO x as a sparse COO tensor holding the non-zeros of the dense result (the
    dropped entries removed): the same draws as for ``x.to_dense()``."""
    x = x.coalesce()
    idx, vals = x.indices(), x.values().contiguous()
    out = torch.empty_like(vals)
    _advance(x.numel(), vals, out, None, flat_positions(idx, x.shape), p)
    keep = out != 0
    return torch.sparse_coo_tensor(idx[:, keep], out[keep], x.shape, is_coalesced=True, check_invariants=False)


class _Dropout(torch.autograd.Function):
    """x * noise with torch's noise; the backward multiplies by the same noise (from a uint8 mask)."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # type: ignore[override]
        out, kept = _draw(x, p, with_mask=ctx.needs_input_grad[0])
        ctx.save_for_backward(kept)
        ctx.scale = _scale(p)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (kept,) = ctx.saved_tensors
        return grad * kept.to(grad.dtype).mul_(ctx.scale), None


def _bits(t: Tensor) -> Tensor:
    return t.view(torch.int32)


@functools.cache
def reproduces_torch() -> bool:
    """Whether :func:`dropout`'s C pass gives torch's dropout bit for bit in this process (outputs, input
    gradients and the generator's state after), tried once on a small tensor with the generator's state
    restored."""
    if cabi.library() is None or torch.get_rng_state().numel() != _STATE_BYTES:
        return False
    saved = torch.get_rng_state()
    try:
        with torch.enable_grad():
            return all(_same_as_torch(with_grad) for with_grad in (False, True))
    finally:
        torch.set_rng_state(saved)


def _same_as_torch(with_grad: bool) -> bool:
    x = torch.linspace(-2.0, 2.0, 4099, device="cpu")
    x[::3] = 0.0
    x.requires_grad_(with_grad)
    runs = []
    for fn in (torch.nn.functional.dropout, _Dropout.apply):
        torch.default_generator.manual_seed(20261207)
        out = fn(x, 0.3)
        grad = torch.autograd.grad(out.sum(), x)[0] if with_grad else x.detach()
        runs.append((_bits(out.detach()), torch.get_rng_state(), _bits(grad)))
    return all(a.equal(b) for a, b in zip(*runs))


def runs_exactly(x: Tensor, p: float, training: bool) -> bool:
    """Whether :func:`dropout` runs its C pass on x (else it is torch's dropout): training with 0 < p < 1
    on a non-empty CPU float32 tensor, contiguous or sparse COO without a gradient, in a process where the
    pass reproduces torch's draws."""
    layout_ok = x.is_contiguous() if x.layout == torch.strided else x.is_sparse and not x.requires_grad
    return (
        training
        and 0.0 < p < 1.0
        and x.numel() > 0
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and layout_ok
        and reproduces_torch()
    )


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``torch.nn.functional.dropout(x, p, training)``, bit for bit and with the same draws from the
    default generator; computed in C where :func:`runs_exactly`. A sparse COO x (a batch of spikes) gives
    a sparse COO result whose ``to_dense()`` is torch's dropout of ``x.to_dense()``; x itself where torch
    returns its input (``p == 0`` or not training)."""
    if x.is_sparse and not runs_exactly(x, p, training):
        return x if p == 0.0 or not training else torch.nn.functional.dropout(x.to_dense(), p, training)
    if not runs_exactly(x, p, training):
        return torch.nn.functional.dropout(x, p, training)
    return _draw_sparse(x, p) if x.is_sparse else _Dropout.apply(x, p)
