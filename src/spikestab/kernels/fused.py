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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..neurons.functional import Dynamics, NeuronState
from ..surrogate import SurrogateGradient
from . import sparse
from .reference import run_reference


@dataclass(frozen=True)
class _Config:
    """Non-differentiable settings of one fused call."""

    spike_fn: SurrogateGradient
    reset: str
    detach_reset: bool
    rho: Tensor | None
    beta_adapt: Tensor | None
    return_voltage: bool
    event: bool  # recurrent products from the spikes' non-zeros (kernels.sparse), CPU float32 only


_CHUNK = 64  # time steps per surrogate-gradient evaluation (bounds its temporaries)


def needs_reference(dyn: Dynamics) -> bool:
    """True when some gradient of ``dyn`` is outside what the fused backward computes."""
    sg = dyn.spike_fn
    extras = [sg.dampening, sg.sharpness] + ([dyn.rho, dyn.beta_adapt] if dyn.adaptive else [])
    return any(t.requires_grad for t in extras)


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a [.., B, H] gradient back to the shape of a scalar or per-neuron parameter."""
    return grad.sum().reshape(like.shape) if like.dim() == 0 else grad.sum_to_size(like.shape)


class _FusedSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, weight_hh, alpha, threshold, v0, z0, a0, cfg: _Config):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        steps = current.shape[0]
        volts = torch.empty_like(current)
        spikes = torch.empty_like(current)
        adaptive = cfg.rho is not None
        thresholds = torch.empty_like(current) if adaptive else None
        # (alpha v + I) before the all-reset factor, only needed for its reset gradient
        pre_reset = torch.empty_like(current) if cfg.reset == "multiplicative_all" and not cfg.detach_reset else None
        w_t = weight_hh.t() if weight_hh is not None else None
        if cfg.event and w_t is not None:
            w_t = w_t.contiguous()
        keep = 1.0 - cfg.rho if adaptive else None
        v, z, a = v0, z0.to(current.dtype), a0
        thr = threshold
        for t in range(steps):
            # mm then add (not addmm) keeps the reference's rounding, so spikes match it bit for bit
            if w_t is None:
                i_t = current[t]
            elif cfg.event:
                i_t = sparse.spmm_acc(z.contiguous(), w_t, current[t].clone(memory_format=torch.contiguous_format))
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
            z = torch.gt(v, thr, out=spikes[t])
        ctx.cfg = cfg
        ctx.save_for_backward(volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0)
        outs_v = volts if cfg.return_voltage else None
        a_final = a.clone() if a is not None else None
        return spikes, outs_v, v.clone(), z.clone(), a_final

    @staticmethod
    def backward(ctx, g_spikes, g_volts, g_v_final, g_z_final, g_a_final):  # type: ignore[override]
        volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0 = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        adaptive = cfg.rho is not None
        steps = volts.shape[0]
        z0 = z0.to(volts.dtype)
        # work[t] first holds the surrogate gradient at step t, then (once used) the gradient of the
        # total input current I_t: one [T, B, H] buffer beside the saved voltages.
        work = torch.empty_like(volts)
        for c in range(0, steps, _CHUNK):
            thr = thresholds[c : c + _CHUNK] if adaptive else threshold
            work[c : c + _CHUNK] = cfg.spike_fn.derivative(volts[c : c + _CHUNK] - thr)
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
            h = volts.shape[-1]
            g_w = work[0].t() @ z0
            if steps > 1 and cfg.event:
                g_w += sparse.spmm_t_acc(spikes[:-1].reshape(-1, h), work[1:].reshape(-1, h), torch.zeros_like(g_w)).t()
            elif steps > 1:
                g_w = torch.addmm(g_w, work[1:].reshape(-1, h).t(), spikes[:-1].reshape(-1, h))
        g_alpha_out = _sum_to(g_alpha, alpha) if want_alpha else None
        g_thr_out = _sum_to(g_thr, threshold) if want_thr else None
        g_v0 = gv_next if ctx.needs_input_grad[4] else None
        g_z0 = gz if ctx.needs_input_grad[5] else None
        g_a0 = ga_next if adaptive and ctx.needs_input_grad[6] else None
        return work, g_w, g_alpha_out, g_thr_out, g_v0, g_z0, g_a0, None


def _run(current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool,
         event: bool) -> tuple[Tensor, Tensor | None, NeuronState]:
    if needs_reference(dyn):
        return run_reference(current, weight_hh, dyn, state, return_voltage)
    event = event and weight_hh is not None and sparse.available(current, weight_hh, state.z)
    cfg = _Config(dyn.spike_fn, dyn.reset, dyn.detach_reset, dyn.rho, dyn.beta_adapt, return_voltage, event)
    a0 = state.a if dyn.adaptive else None
    z, v, v_last, z_last, a_last = _FusedSequence.apply(
        current, weight_hh, dyn.alpha, dyn.threshold, state.v, state.z, a0, cfg
    )
    return z, v, NeuronState(v_last, z_last, a_last if dyn.adaptive else state.a)


def run_fused(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """Fused-BPTT equivalent of ``run_reference`` (same arguments and results), dense products."""
    return _run(current, weight_hh, dyn, state, return_voltage, event=False)


def run_event(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """``run_fused`` with event-driven recurrent products: the recurrent input of each step and the
    recurrent weight gradient visit only the spikes (dense products where the C loops cannot run)."""
    return _run(current, weight_hh, dyn, state, return_voltage, event=True)
