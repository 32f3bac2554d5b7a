"""Segment (activation) checkpointing over time for LIF/ALIF sequence layers.

The fused kernel keeps one float per [T, B, H] entry for backward (the voltages), the least any
kernel can keep without recomputing. To go lower, the sequence runs in segments of k steps, each
under ``torch.utils.checkpoint`` (non-reentrant): its forward keeps, for backward, only the
segment's input state (v, z, a), [B, H] each, and the layer input x, which the caller holds
anyway; the input current x W^T + b is not kept either. Backward walks the segments from last to
first, recomputing each one (input projection plus kernel, with grad) and back-propagating the
gradients of its spikes and of its final state through it. Segments of k ~ sqrt(T) steps keep
2-3 T/k (LIF-ALIF) + (during backward, for one segment) a few k entries of [B, H] instead of T or
more: at T=250, k=16, under 1/10 of what the reference loop keeps, for one extra forward pass (the
first call also imports ``torch._dynamo``, which ``torch.utils.checkpoint`` needs: seconds, once).

The kernel and projection are chosen once for the whole x, as the non-checkpointed layer chooses
them, and reused for every segment and its recomputation, so the recomputation reproduces the
forward bit for bit (same kernels, same shapes) and the spikes equal the non-checkpointed layer's.
One caveat: a dense projection of a segment is a matrix product with fewer rows than that of the
whole sequence, and a BLAS may round a row differently depending on the number of rows and of
threads (MKL here: mostly products of fewer than 12 rows); the input current can then differ in the last bit,
which changes a
spike only if a voltage lies within that bit of its threshold. Event-driven projections (sparse x)
compute each row alone and are always identical.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..dynamics import Dynamics, NeuronState
from .dispatch import prepare, sparse_projection


def check_checkpoint(value: bool | int) -> bool | int:
    """Validate the layers' ``checkpoint`` option: False (off), True (segments of ceil(sqrt(T))
    steps) or a segment length in steps, an integer >= 1."""
    if isinstance(value, bool) or (isinstance(value, int) and value >= 1):
        return value
    raise ValueError(
        "checkpoint must be False (off), True (segments of ceil(sqrt(T)) steps) or a segment length in "
        f"time steps (integer, accepted range [1, inf)), got {value!r}"
    )


def segment_steps(value: bool | int, steps: int) -> int:
    """Steps per segment for a sequence of ``steps``: ceil(sqrt(T)) for True, else ``value``."""
    return max(1, math.ceil(math.sqrt(steps))) if value is True else int(value)


def _segment(
    weight_ih: Tensor,
    bias: Tensor,
    weight_hh: Tensor | None,
    dyn: Dynamics,
    backend: str,
    sparse_x: bool,
    return_voltage: bool,
    x: Tensor,
    v: Tensor,
    z: Tensor,
    a: Tensor | None,
):
    """One segment: input projection and kernel from the state (v, z, a)."""
    current, kernel = prepare(x, weight_ih, bias, backend, sparse_x)
    spikes, volts, state = kernel(current, weight_hh, dyn, NeuronState(v, z, a), return_voltage)
    return spikes, volts, state.v, state.z, state.a


def run_checkpointed(
    x: Tensor,
    weight_ih: Tensor,
    bias: Tensor,
    weight_hh: Tensor | None,
    dyn: Dynamics,
    state: NeuronState,
    backend: str,
    return_voltage: bool,
    checkpoint: bool | int,
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """The layer's sequence x [T, B, I] in checkpointed segments: same results as
    ``kernel(prepare(x, ...))`` (spikes, voltages or None, final state); backward recomputes each
    segment instead of keeping its activations."""
    k = segment_steps(check_checkpoint(checkpoint), x.shape[0])
    # the projection is chosen on the whole x, as the non-checkpointed layer chooses it (one segment's
    # density may differ), and every segment and its recomputation compute it that way
    sparse_x = sparse_projection(x, weight_ih, bias, backend)
    fn = partial(_segment, weight_ih, bias, weight_hh, dyn, backend, sparse_x, return_voltage)
    if torch.is_grad_enabled():  # without grad nothing is kept, so there is nothing to recompute
        fn = partial(_checkpoint, fn, use_reentrant=False, preserve_rng_state=False)
    spikes, volts = [], []
    v, z, a = state
    for t0 in range(0, x.shape[0], k):
        # the state goes in as separate tensors: checkpoint keeps tensor arguments for backward
        # through autograd's saved-tensor mechanism (so they are counted), and only those
        s, u, v, z, a = fn(x[t0 : t0 + k], v, z, a)
        spikes.append(s)
        volts.append(u)
    z_all = spikes[0] if len(spikes) == 1 else torch.cat(spikes)
    v_all = None if not return_voltage else volts[0] if len(volts) == 1 else torch.cat(volts)
    return z_all, v_all, NeuronState(v, z, a)
