"""Fused LIF/ALIF sequence kernel: forward loop saving only voltages, hand-written BPTT backward.

Same contract as ``run_reference`` (the update equations are in ``neurons.functional``). The forward
keeps voltages [T, B, H] (plus the adaptive thresholds for ALIF) and the spike output it returns
anyway; autograd's per-step graph (about six saved tensors per step) is replaced by a reverse loop
whose only sequential work is the adjoint recurrence. Everything that does not depend on the
recurrence is computed for all steps at once: the surrogate gradient over [T, B, H] before the reverse
loop, the recurrent weight gradient as one matrix product over all steps, and the decay gradient as
one reduction after it. Plain torch ops, so it runs unchanged on CUDA tensors.

Falls back to the reference loop (automatically) when the surrogate's dampening/sharpness or the
ALIF buffers rho/beta_adapt require gradients: those gradients are left to autograd.

``kernels.event`` runs the same equations with both time loops in C and shares this module's
``LoopConfig``, ``surrogate_gradient`` and ``recurrent_weight_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..dynamics import Dynamics, NeuronState
from ..surrogate import SurrogateGradient, heaviside
from . import sparse
from .reference import run_reference


@dataclass(frozen=True)
class LoopConfig:
    """Non-differentiable settings of one fused call."""

    spike_fn: SurrogateGradient
    reset: str
    detach_reset: bool
    rho: Tensor | None
    beta_adapt: Tensor | None
    return_voltage: bool


# entries per surrogate-gradient evaluation: its temporaries stay in cache (docs/results/kernels.md)
_CHUNK_ELEMENTS = 1 << 17


def needs_reference(dyn: Dynamics) -> bool:
    """True when some gradient of ``dyn`` is outside what the fused backward computes."""
    sg = dyn.spike_fn
    extras = [sg.dampening, sg.sharpness] + ([dyn.rho, dyn.beta_adapt] if dyn.adaptive else [])
    return any(t.requires_grad for t in extras)


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a [.., B, H] gradient back to the shape of a scalar or per-neuron parameter."""
    return grad.sum().reshape(like.shape) if like.dim() == 0 else grad.sum_to_size(like.shape)


def surrogate_gradient(
    spike_fn: SurrogateGradient, volts: Tensor, thresholds: Tensor | None, threshold: Tensor
) -> Tensor:
    """The surrogate gradient at every step [T, B, H], evaluated in chunks of steps (bounded temporaries)."""
    work = torch.empty_like(volts)
    chunk = max(1, _CHUNK_ELEMENTS // max(volts[0].numel(), 1))
    for c in range(0, volts.shape[0], chunk):
        thr = thresholds[c : c + chunk] if thresholds is not None else threshold
        work[c : c + chunk] = spike_fn.derivative(volts[c : c + chunk] - thr)
    return work


def recurrent_weight_grad(g_current: Tensor, spikes: Tensor, z0: Tensor, density: float | None) -> Tensor:
    """dL/dW_hh = sum_t gI_t^T z_{t-1} as one product over all steps; from the spikes' non-zeros only
    (kernels.sparse) when the CPU float32 caller gives their ``density`` (steps 0..T-2) and it is at
    most ``sparse.HIDDEN_EVENT_DENSITY``."""
    h = spikes.shape[-1]
    g_w = g_current[0].t() @ z0.to(g_current.dtype)
    if spikes.shape[0] == 1:
        return g_w
    prev, g = spikes[:-1].reshape(-1, h), g_current[1:].reshape(-1, h)
    if density is not None and density <= sparse.HIDDEN_EVENT_DENSITY:
        return g_w.add_(sparse.sparse_mm_t(sparse.nonzeros(prev), g).t())
    return torch.addmm(g_w, g.t(), prev)


class FusedSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, weight_hh, alpha, threshold, v0, z0, a0, cfg: LoopConfig):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        steps = current.shape[0]
        volts = torch.empty_like(current)
        spikes = torch.empty_like(current)
        adaptive = cfg.rho is not None
        thresholds = torch.empty_like(current) if adaptive else None
        # (alpha v + I) before the all-reset factor, only needed for its reset gradient
        pre_reset = torch.empty_like(current) if cfg.reset == "multiplicative_all" and not cfg.detach_reset else None
        w_t = weight_hh.t() if weight_hh is not None else None
        keep = 1.0 - cfg.rho if adaptive else None
        v, z, a = v0, z0.to(current.dtype), a0
        thr = threshold
        for t in range(steps):
            # mm then add (not addmm) keeps the reference's rounding, so spikes match it bit for bit
            if w_t is None:
                i_t = current[t]
            else:
                i_t = torch.mm(z, w_t).add_(current[t])
            if adaptive:
                a = cfg.rho * a + keep * z
                thr = torch.add(threshold, cfg.beta_adapt * a, out=thresholds[t])
            out = volts[t]
            if cfg.reset == "subtract":
                torch.mul(v, alpha, out=out).add_(i_t).addcmul_(z, thr, value=-1.0)  # z binary: exact
            elif cfg.reset == "multiplicative":
                torch.mul(v, alpha, out=out).mul_(1.0 - z).add_(i_t)
            elif cfg.reset == "multiplicative_all":
                p = torch.mul(v, alpha, out=out).add_(i_t)
                if pre_reset is not None:
                    pre_reset[t] = p
                out.mul_(1.0 - z)
            else:
                torch.mul(v, alpha, out=out).add_(i_t)
            v = out
            z = heaviside(torch.sub(v, thr), out=spikes[t])  # NaN where v - thr is not finite
        ctx.cfg = cfg
        ctx.save_for_backward(volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0)
        outs_v = volts if cfg.return_voltage else None
        a_final = a.clone() if a is not None else None
        return spikes, outs_v, v.clone(), z.clone(), a_final

    @staticmethod
    def backward(ctx, g_spikes, g_volts, g_v_final, g_z_final, g_a_final):  # type: ignore[override]
        volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0 = ctx.saved_tensors
        cfg: LoopConfig = ctx.cfg
        adaptive = cfg.rho is not None
        steps = volts.shape[0]
        z0 = z0.to(volts.dtype)
        # work[t] first holds the surrogate gradient at step t, then (once used) the gradient of the
        # total input current I_t: one [T, B, H] buffer beside the saved voltages.
        work = surrogate_gradient(cfg.spike_fn, volts, thresholds, threshold)
        zeros = volts.new_zeros(volts.shape[1:])
        gv_next = g_v_final if g_v_final is not None else zeros
        gz = g_z_final if g_z_final is not None else zeros
        if g_spikes is not None:
            gz = gz + g_spikes[-1]
        ga_next = (g_a_final if g_a_final is not None else zeros) if adaptive else None
        want_thr, want_alpha = ctx.needs_input_grad[3], ctx.needs_input_grad[2]
        g_thr = zeros.clone() if want_thr else None
        g_alpha = zeros.clone() if want_alpha else None
        keep = 1.0 - cfg.rho if adaptive else None
        grad_reset = not cfg.detach_reset
        for t in range(steps - 1, -1, -1):
            sg, gi_out = work[t], work[t]
            zp = spikes[t - 1] if t > 0 else z0
            vp = volts[t - 1] if t > 0 else v0
            g_a_thr = None  # gradient of A_t, the threshold at step t
            if adaptive or want_thr or (grad_reset and cfg.reset == "subtract"):
                g_a_thr = -(gz * sg)
                gv = gv_next - g_a_thr
            else:
                gv = torch.addcmul(gv_next, gz, sg, out=work[t] if cfg.reset != "multiplicative_all" else None)
            if g_volts is not None:
                gv = gv + g_volts[t]
            gzp = None  # gradient of z_{t-1} through the reset
            if cfg.reset == "multiplicative_all":
                gi = torch.mul(gv, 1.0 - zp, out=gi_out)
                gv_next = gi * alpha
                if grad_reset:
                    gzp = -gv * pre_reset[t]
            else:
                gi = gv if gv.data_ptr() == gi_out.data_ptr() else gi_out.copy_(gv)
                gv_next = gv * alpha
                if cfg.reset == "multiplicative":
                    gv_next = gv_next * (1.0 - zp)
                    if grad_reset:
                        gzp = -gv * alpha * vp
                elif cfg.reset == "subtract" and grad_reset:
                    g_a_thr = g_a_thr - gv * zp
                    gzp = -gv * (thresholds[t] if adaptive else threshold)
            if want_alpha:
                leak = gi * vp if cfg.reset != "multiplicative" else gi * vp * (1.0 - zp)
                g_alpha += leak
            if want_thr:
                g_thr += g_a_thr
            if adaptive:
                ga = ga_next + cfg.beta_adapt * g_a_thr
                ga_next = cfg.rho * ga
                gzp = keep * ga if gzp is None else gzp + keep * ga
            base = g_spikes[t - 1] if g_spikes is not None and t > 0 else None
            if weight_hh is not None:
                rec = gi @ weight_hh if base is None else torch.addmm(base, gi, weight_hh)
                gz = rec if gzp is None else rec + gzp
            else:
                parts = [p for p in (base, gzp) if p is not None]
                gz = zeros if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1]
        g_w = None
        if weight_hh is not None and ctx.needs_input_grad[1]:
            g_w = recurrent_weight_grad(work, spikes, z0, None)
        g_alpha_out = _sum_to(g_alpha, alpha) if want_alpha else None
        g_thr_out = _sum_to(g_thr, threshold) if want_thr else None
        g_v0 = gv_next if ctx.needs_input_grad[4] else None
        g_z0 = gz if ctx.needs_input_grad[5] else None
        g_a0 = ga_next if adaptive and ctx.needs_input_grad[6] else None
        return work, g_w, g_alpha_out, g_thr_out, g_v0, g_z0, g_a0, None


def run_fused(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """The torch time loop with the hand-written BPTT backward: same arguments and results as
    ``run_reference`` (which it defers to when ``needs_reference(dyn)``), dense products."""
    if needs_reference(dyn):
        return run_reference(current, weight_hh, dyn, state, return_voltage)
    cfg = LoopConfig(dyn.spike_fn, dyn.reset, dyn.detach_reset, dyn.rho, dyn.beta_adapt, return_voltage)
    a0 = state.a if dyn.adaptive else None
    z, v, v_last, z_last, a_last = FusedSequence.apply(
        current, weight_hh, dyn.alpha, dyn.threshold, state.v, state.z, a0, cfg
    )
    return z, v, NeuronState(v_last, z_last, a_last if dyn.adaptive else state.a)
