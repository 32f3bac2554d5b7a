"""The native sequence kernel (backend "native"): both time loops of a LIF/ALIF layer in C, on sparse and
dense spikes alike (the backend was called "event" before; ``kernels.dispatch`` still reads that name).

Same contract and equations as ``run_fused`` (``kernels.fused``), with the forward and backward time
loops each one call into the native library (``csrc/lif.c``, through the structs of ``kernels.cabi``):
no per-step Python dispatch; batch rows split over OpenMP threads; the recurrent products (forward
z W_hh^T, backward gI W_hh) visit only the active columns; the recurrent weight gradient comes from the
spikes' non-zeros when they are sparse. The forward performs the torch loop's floating-point operations
in the same order, so its spikes equal the reference loop's bit for bit. The backward evaluates the
rational surrogate-gradient shapes itself (``SURROGATE_CODES``); the others are computed in torch first.
With a surrogate gradient of bounded support (``surrogate.BOUNDED_SUPPORT``) the adjoint product
gI_t W_hh is computed only at the neurons whose surrogate gradient at step t - 1 is non-zero (the others
never use it) wherever that pays (``SPARSE_ADJOINT_BELOW``): the same gradients to float rounding
(Perez-Nieves & Goodman 2021, "Sparse spiking gradient descent").

It runs on CPU float32 tensors with scalar or per-neuron parameters once the library is built
(``native_blocker`` says why not, otherwise); :func:`run_native` raises where it cannot run, backend "auto"
(``kernels.dispatch.run_auto``) takes the torch loop there instead.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from ..dynamics import RESETS, Dynamics, NeuronState, adaptation
from ..surrogate import BOUNDED_SUPPORT
from . import build, cabi, sparse
from .fused import LoopConfig, needs_reference, recurrent_weight_grad, surrogate_gradient
from .reference import run_reference

__all__ = [
    "RESET_CODES",
    "SPARSE_ADJOINT_BELOW",
    "SURROGATE_CODES",
    "NativeSequence",
    "native_blocker",
    "run_native",
    "sequence_backward",
    "sequence_forward",
]

# enum spk_reset of csrc/spikestab.h follows the order of RESETS
RESET_CODES = {name: code for code, name in enumerate(RESETS)}
# surrogate-gradient shapes the C backward evaluates itself (enum spk_surrogate; the formulas of
# spikestab.surrogate)
SURROGATE_CODES = {"fast-sigmoid": 0, "triangular": 1, "rectangular": 2}
_SG_GIVEN = -1
# a tile's adjoint product gI_t W_hh runs over the neurons active at step t - 1 only when they number
# fewer than this times the non-zeros of the tile's gI_t (the full product skips zero columns): one
# selected dot product costs about 3x the full product's work per non-zero (it cannot share a weight
# load across batch rows); measured break-even 0.33 (docs/results/kernels.md, "Sparse adjoint product")
SPARSE_ADJOINT_BELOW = 0.3


def sequence_forward(
    current: Tensor,
    wt: Tensor | None,
    alpha: Tensor,
    threshold: Tensor,
    rho: Tensor | None,
    beta: Tensor | None,
    v0: Tensor,
    z0: Tensor,
    a0: Tensor | None,
    reset: str,
    keep_pre_reset: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, float]:
    """The forward time loop in one C call. current [T, B, H]; wt = W_hh^T [H, H] or None; per-neuron
    parameters [H]; state [B, H] (all contiguous float32). Returns voltages and spikes [T, B, H], the
    adaptive thresholds [T, B, H] (ALIF), the pre-reset voltages (``keep_pre_reset``), the final
    adaptation [B, H] (ALIF) and the spike density of steps 0..T-2 (counted on the way)."""
    steps, batch, hidden = current.shape
    volts, spikes = torch.empty_like(current), torch.empty_like(current)
    adaptive = rho is not None
    thresholds = torch.empty_like(current) if adaptive else None
    pre_reset = torch.empty_like(current) if keep_pre_reset else None
    a_out = torch.empty_like(v0) if adaptive else None
    p = cabi.ptr
    args = cabi.ForwardArgs(
        T=steps,
        B=batch,
        H=hidden,
        current=p(current),
        wt=p(wt),
        alpha=p(alpha),
        threshold=p(threshold),
        rho=p(rho),
        beta=p(beta),
        v0=p(v0),
        z0=p(z0),
        a0=p(a0),
        volts=p(volts),
        spikes=p(spikes),
        thresholds=p(thresholds),
        pre_reset=p(pre_reset),
        a_out=p(a_out),
        reset=RESET_CODES[reset],
        threads=cabi.threads(),
    )
    cabi.call("spk_lif_forward", ctypes.byref(args))
    density = args.spikes_before_last / max((steps - 1) * batch * hidden, 1)
    return volts, spikes, thresholds, pre_reset, a_out, density


def sequence_backward(
    work: Tensor,
    w: Tensor | None,
    alpha: Tensor,
    threshold: Tensor,
    rho: Tensor | None,
    beta: Tensor | None,
    volts: Tensor,
    spikes: Tensor,
    thresholds: Tensor | None,
    pre_reset: Tensor | None,
    v0: Tensor,
    z0: Tensor,
    grads: dict[str, Tensor | None],
    reset: str,
    grad_reset: bool,
    want_alpha: bool,
    want_thr: bool,
    surrogate: tuple[str, float, float] | None,
    sparse_below: float,
) -> tuple[dict[str, Tensor | None], tuple[int, int]]:
    """The backward time loop in one C call. ``work`` [T, B, H] receives the gradient of the input
    current; it holds the surrogate gradient at entry unless ``surrogate`` = (shape, dampening,
    sharpness) names one of ``SURROGATE_CODES``, evaluated in C; w = W_hh [H, H] or None; ``grads`` holds
    the incoming gradients "spikes", "volts" [T, B, H] and "v", "z", "a" [B, H] (None where absent);
    ``sparse_below`` (0: never): the adjoint product of a tile's step runs over the active neurons only
    when they number fewer than ``sparse_below`` times the non-zeros of its gI. Returns the gradients of
    v0, z0, a0 (ALIF) and, per batch row, of alpha and the threshold [B, H] (when wanted), and the counts
    (non-zero surrogate-gradient entries, counted only where the selected products may run, else 0;
    (row, step) adjoint products over the active neurons only).
    All tensors contiguous float32."""
    steps, batch, hidden = work.shape
    out = {
        "v0": torch.empty_like(v0),
        "z0": torch.empty_like(v0),
        "a0": torch.empty_like(v0) if rho is not None else None,
        "alpha": torch.empty_like(v0) if want_alpha else None,
        "thr": torch.empty_like(v0) if want_thr else None,
    }
    shape, damp, sharp = (
        (SURROGATE_CODES[surrogate[0]], surrogate[1], surrogate[2]) if surrogate else (_SG_GIVEN, 0.0, 0.0)
    )
    p = cabi.ptr
    args = cabi.BackwardArgs(
        T=steps,
        B=batch,
        H=hidden,
        w=p(w),
        alpha=p(alpha),
        threshold=p(threshold),
        rho=p(rho),
        beta=p(beta),
        volts=p(volts),
        spikes=p(spikes),
        thresholds=p(thresholds),
        pre_reset=p(pre_reset),
        v0=p(v0),
        z0=p(z0),
        g_spikes=p(grads["spikes"]),
        g_volts=p(grads["volts"]),
        g_vT=p(grads["v"]),
        g_zT=p(grads["z"]),
        g_aT=p(grads["a"]),
        work=p(work),
        g_alpha=p(out["alpha"]),
        g_thr=p(out["thr"]),
        g_v0=p(out["v0"]),
        g_z0=p(out["z0"]),
        g_a0=p(out["a0"]),
        sg_dampening=damp,
        sg_sharpness=sharp,
        sparse_below=sparse_below,
        sg_shape=shape,
        reset=RESET_CODES[reset],
        grad_reset=int(grad_reset),
        threads=cabi.threads(),
    )
    cabi.call("spk_lif_backward", ctypes.byref(args))
    return out, (args.sg_nonzero, args.sparse_rows)


class NativeSequence(torch.autograd.Function):
    """``FusedSequence`` with both time loops in C; CPU float32 only. Per-neuron parameters arrive
    expanded to [H], state and weights contiguous (``run_native`` prepares them)."""

    @staticmethod
    def forward(ctx, current, weight_hh, alpha, threshold, v0, z0, a0, cfg: LoopConfig):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        wt = weight_hh.t().contiguous() if weight_hh is not None else None
        keep_pre_reset = cfg.reset == "multiplicative_all" and not cfg.detach_reset
        volts, spikes, thresholds, pre_reset, a_last, ctx.density = sequence_forward(
            current, wt, alpha, threshold, cfg.rho, cfg.beta_adapt, v0, z0, a0, cfg.reset, keep_pre_reset
        )
        ctx.cfg = cfg
        ctx.save_for_backward(volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0)
        return spikes, volts if cfg.return_voltage else None, volts[-1].clone(), spikes[-1].clone(), a_last

    @staticmethod
    def backward(ctx, g_spikes, g_volts, g_v_final, g_z_final, g_a_final):  # type: ignore[override]
        volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0 = ctx.saved_tensors
        cfg: LoopConfig = ctx.cfg
        sg = cfg.spike_fn
        in_c = sg.shape in SURROGATE_CODES and sg.dampening.numel() == 1 and sg.sharpness.numel() == 1
        surrogate = (sg.shape, float(sg.dampening), float(sg.sharpness)) if in_c else None
        work = torch.empty_like(volts) if in_c else surrogate_gradient(sg, volts, thresholds, threshold)
        grads = {
            k: None if g is None else g.contiguous()
            for k, g in (("spikes", g_spikes), ("volts", g_volts), ("v", g_v_final), ("z", g_z_final), ("a", g_a_final))
        }
        want_alpha, want_thr = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        out, _ = sequence_backward(
            work,
            weight_hh,
            alpha,
            threshold,
            cfg.rho,
            cfg.beta_adapt,
            volts,
            spikes,
            thresholds,
            pre_reset,
            v0,
            z0,
            grads,
            cfg.reset,
            not cfg.detach_reset,
            want_alpha,
            want_thr,
            surrogate,
            SPARSE_ADJOINT_BELOW if sg.shape in BOUNDED_SUPPORT else 0.0,
        )
        g_w = None
        if weight_hh is not None and ctx.needs_input_grad[1]:
            g_w = recurrent_weight_grad(work, spikes, z0, ctx.density)
        return (
            work,
            g_w,
            out["alpha"].sum(0) if want_alpha else None,
            out["thr"].sum(0) if want_thr else None,
            out["v0"] if ctx.needs_input_grad[4] else None,
            out["z0"] if ctx.needs_input_grad[5] else None,
            out["a0"] if ctx.needs_input_grad[6] else None,
            None,
        )


def native_blocker(current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState) -> str | None:
    """Why the C loops cannot run on these tensors, or None when they can: the native library is not
    built, a tensor is not CPU float32, or a shape is other than [T, B, H] current (T >= 1), [B, H]
    state, [H, H] weights and scalar or [H] parameters."""
    if current.dim() != 3 or current.shape[0] == 0:
        return f"the input current must have shape [T >= 1, B, H], got {tuple(current.shape)}"
    steps, batch, hidden = current.shape
    per_neuron, states = [dyn.alpha, dyn.threshold], [state.v, state.z]
    if dyn.adaptive:
        rho, beta_adapt, a = adaptation(dyn, state.a)
        per_neuron, states = [*per_neuron, rho, beta_adapt], [*states, a]
    tensors = [t for t in (current, weight_hh, *per_neuron, *states) if t is not None]
    if not all(sparse.native_kind(t.device, t.dtype) for t in tensors):
        kinds = sorted({f"{t.device.type} {t.dtype}" for t in tensors})
        return f"the C loops run on CPU float32 tensors only, got {', '.join(kinds)}"
    if any(p.dim() > 1 or p.numel() not in (1, hidden) for p in per_neuron):
        return f"per-neuron parameters must be scalars or of shape ({hidden},)"
    if any(s.shape != (batch, hidden) for s in states):
        return f"the state tensors must have shape ({batch}, {hidden})"
    if weight_hh is not None and weight_hh.shape != (hidden, hidden):
        return f"weight_hh must have shape ({hidden}, {hidden}), got {tuple(weight_hh.shape)}"
    if not sparse.runs_natively():
        return f"the native kernels could not be built ({build.failure() or 'ABI mismatch'})"
    return None


def run_native(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """``run_fused`` with both time loops in C (same arguments and results; ``run_reference`` when
    ``needs_reference(dyn)``, as for ``run_fused``). Raises RuntimeError, naming the reason, where the
    C loops cannot run (``native_blocker``)."""
    if needs_reference(dyn):
        return run_reference(current, weight_hh, dyn, state, return_voltage)
    reason = native_blocker(current, weight_hh, dyn, state)
    if reason is not None:
        raise RuntimeError(
            f"backend 'native' cannot run here: {reason}; backend 'auto' takes the torch loop "
            "where the C loops cannot run"
        )
    hidden = current.shape[-1]

    def per_neuron(t: Tensor) -> Tensor:
        return t.expand(hidden).contiguous()

    rho = beta = a0 = None
    if dyn.adaptive:
        rho_t, beta_t, a = adaptation(dyn, state.a)
        rho, beta, a0 = per_neuron(rho_t), per_neuron(beta_t), a.contiguous()
    cfg = LoopConfig(dyn.spike_fn, dyn.reset, dyn.detach_reset, rho, beta, return_voltage)
    w = weight_hh.contiguous() if weight_hh is not None else None
    z, v, v_last, z_last, a_last = NativeSequence.apply(
        current.contiguous(),
        w,
        per_neuron(dyn.alpha),
        per_neuron(dyn.threshold),
        state.v.contiguous(),
        state.z.contiguous(),
        a0,
        cfg,
    )
    return z, v, NeuronState(v_last, z_last, a_last if dyn.adaptive else state.a)
