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

``kernels.native`` runs the same equations with both time loops in C and shares this module's
``LoopConfig``, ``surrogate_gradient`` and ``recurrent_weight_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..dynamics import Dynamics, NeuronState, adaptation
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
    return any(t is not None and t.requires_grad for t in extras)


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
        keep = 1.0 - cfg.rho if cfg.rho is not None else None
        v, z, a = v0, z0.to(current.dtype), a0
        thr = threshold
        for t in range(steps):
            # mm then add (not addmm) keeps the reference's rounding, so spikes match it bit for bit
            if w_t is None:
                i_t = current[t]
            else:
                i_t = torch.mm(z, w_t).add_(current[t])
            if thresholds is not None:  # ALIF
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
        """BPTT of the forward equations (``dynamics``) as a reverse loop over the adjoints, t = T-1 .. 0.

        sg_t = f(v_t - A_t) is the surrogate gradient; gz_t = dL/dz_t arrives from the spike output and
        from step t+1; gv'_{t+1} is what v_{t+1} sends back to v_t (gv'_T: the final state's gradient):
            gA_t    = -gz_t sg_t                                 (A_t: the threshold at step t)
            gv_t    = gv'_{t+1} + gz_t sg_t  (+ the voltage output's gradient)
            gI_t    = gv_t                                       subtract, multiplicative, none
                    = gv_t (1 - z_{t-1})                         multiplicative_all
            gv'_t   = alpha gv_t                                 subtract, none
                    = alpha gv_t (1 - z_{t-1})                   multiplicative
                    = alpha gI_t                                 multiplicative_all
        The reset's gradient into z_{t-1}, without ``detach_reset`` only:
            subtract            gz_{t-1} += -gv_t A_t            and gA_t += -gv_t z_{t-1}
            multiplicative      gz_{t-1} += -gv_t alpha v_{t-1}
            multiplicative_all  gz_{t-1} += -gv_t (alpha v_{t-1} + I_t)
        ALIF (a_t = rho a_{t-1} + (1 - rho) z_{t-1}, A_t = threshold + beta a_t), ga'_T the final gradient:
            ga_t = ga'_{t+1} + beta gA_t,   ga'_t = rho ga_t,   gz_{t-1} += (1 - rho) ga_t
        The recurrence and the spike output close the loop: gz_{t-1} += gI_t W_hh + dL/dz_{t-1}.
        Parameters: g_alpha = sum_t gI_t v_{t-1} (times (1 - z_{t-1}) for multiplicative),
        g_threshold = sum_t gA_t, g_W_hh = sum_t gI_t^T z_{t-1}, g_current_t = gI_t, g_v0 = gv'_0,
        g_z0 = gz_{-1}, g_a0 = ga'_0.

        One [T, B, H] buffer beside the saved voltages: ``work[t]`` holds sg_t until step t uses it,
        then gI_t (which is also the current's gradient, returned as is)."""
        volts, spikes, thresholds, pre_reset, weight_hh, alpha, threshold, v0, z0 = ctx.saved_tensors
        cfg: LoopConfig = ctx.cfg
        rev = _Reverse(
            cfg,
            alpha,
            threshold,
            thresholds,
            pre_reset,
            weight_hh,
            volts.new_zeros(volts.shape[1:]),
            ctx.needs_input_grad[2],
            ctx.needs_input_grad[3],
        )
        work = surrogate_gradient(cfg.spike_fn, volts, thresholds, threshold)
        z0 = z0.to(volts.dtype)
        gz = g_z_final if g_z_final is not None else rev.zeros
        if g_spikes is not None:
            gz = gz + g_spikes[-1]
        gv_next = g_v_final if g_v_final is not None else rev.zeros
        ga_next = (g_a_final if g_a_final is not None else rev.zeros) if rev.adaptive else None
        for t in range(volts.shape[0] - 1, -1, -1):
            zp, vp = (spikes[t - 1], volts[t - 1]) if t > 0 else (z0, v0)
            base = g_spikes[t - 1] if g_spikes is not None and t > 0 else None
            gz, gv_next, ga_next = rev.step(
                t, work, gz, gv_next, ga_next, zp, vp, g_volts[t] if g_volts is not None else None, base
            )
        g_w = None
        if weight_hh is not None and ctx.needs_input_grad[1]:
            g_w = recurrent_weight_grad(work, spikes, z0, None)
        g_alpha = _sum_to(rev.g_alpha, alpha) if rev.g_alpha is not None else None
        g_thr = _sum_to(rev.g_thr, threshold) if rev.g_thr is not None else None
        g_v0 = gv_next if ctx.needs_input_grad[4] else None
        g_z0 = gz if ctx.needs_input_grad[5] else None
        g_a0 = ga_next if rev.adaptive and ctx.needs_input_grad[6] else None
        return work, g_w, g_alpha, g_thr, g_v0, g_z0, g_a0, None


def _into(out: Tensor, value: Tensor) -> Tensor:
    """``value`` in ``out`` (no copy when it is there already)."""
    return value if value.data_ptr() == out.data_ptr() else out.copy_(value)


class _Reverse:
    """The reverse loop of ``FusedSequence.backward``: one ``step`` per time step, with one method per
    reset rule for the part of the adjoint the rule changes (gI_t, gv'_t and the reset's own gradient)."""

    def __init__(
        self,
        cfg: LoopConfig,
        alpha: Tensor,
        threshold: Tensor,
        thresholds: Tensor | None,
        pre_reset: Tensor | None,
        weight_hh: Tensor | None,
        zeros: Tensor,
        want_alpha: bool,
        want_thr: bool,
    ) -> None:
        self.cfg, self.alpha, self.threshold, self.thresholds = cfg, alpha, threshold, thresholds
        self.pre_reset, self.weight_hh, self.zeros = pre_reset, weight_hh, zeros
        self.adaptive = cfg.rho is not None
        self.keep = 1.0 - cfg.rho if cfg.rho is not None else None
        self.grad_reset = not cfg.detach_reset
        self.g_alpha = zeros.clone() if want_alpha else None
        self.g_thr = zeros.clone() if want_thr else None
        # gA_t is needed for ALIF, the threshold's gradient and the subtractive reset's own gradient
        self.need_g_a = self.adaptive or want_thr or (self.grad_reset and cfg.reset == "subtract")
        self.through_reset = {
            "subtract": self._subtract,
            "multiplicative": self._multiplicative,
            "multiplicative_all": self._multiplicative_all,
            "none": self._none,
        }[cfg.reset]

    def step(
        self,
        t: int,
        work: Tensor,
        gz: Tensor,
        gv_next: Tensor,
        ga_next: Tensor | None,
        zp: Tensor,
        vp: Tensor,
        g_volt: Tensor | None,
        g_spike_prev: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """From (gz_t, gv'_{t+1}, ga'_{t+1}) to (gz_{t-1}, gv'_t, ga'_t); writes gI_t into ``work[t]``."""
        sg = work[t]
        g_a = None  # gA_t
        if self.need_g_a:
            g_a = -(gz * sg)
            gv = gv_next - g_a
        else:  # gv_t written over sg_t, which is not needed any more (not for multiplicative_all: gI_t goes there)
            gv = torch.addcmul(gv_next, gz, sg, out=work[t] if self.cfg.reset != "multiplicative_all" else None)
        if g_volt is not None:
            gv = gv + g_volt
        gi, gv_next, gzp, g_a = self.through_reset(t, gv, work[t], zp, vp, g_a)
        if self.g_alpha is not None:
            self.g_alpha += gi * vp * (1.0 - zp) if self.cfg.reset == "multiplicative" else gi * vp
        if self.g_thr is not None:
            self.g_thr += g_a
        if self.adaptive:
            ga = ga_next + self.cfg.beta_adapt * g_a
            ga_next = self.cfg.rho * ga
            gzp = self.keep * ga if gzp is None else gzp + self.keep * ga
        return self._into_previous_spikes(gi, gzp, g_spike_prev), gv_next, ga_next

    def _into_previous_spikes(self, gi: Tensor, gzp: Tensor | None, base: Tensor | None) -> Tensor:
        """gz_{t-1}: the recurrence gI_t W_hh, the reset's and the adaptation's share, the spike output's."""
        if self.weight_hh is not None:
            rec = gi @ self.weight_hh if base is None else torch.addmm(base, gi, self.weight_hh)
            return rec if gzp is None else rec + gzp
        parts = [p for p in (base, gzp) if p is not None]
        return self.zeros if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1]

    # each rule: (gI_t written into gi_out, gv'_t, the reset's gradient into z_{t-1} or None, gA_t)
    def _subtract(self, t: int, gv: Tensor, gi_out: Tensor, zp: Tensor, vp: Tensor, g_a: Tensor | None):
        gi, gv_next, gzp = _into(gi_out, gv), gv * self.alpha, None
        if self.grad_reset and g_a is not None:  # v_t -= A_t z_{t-1} (gA_t is computed for this reset)
            g_a = g_a - gv * zp
            gzp = -gv * (self.thresholds[t] if self.thresholds is not None else self.threshold)
        return gi, gv_next, gzp, g_a

    def _multiplicative(self, t: int, gv: Tensor, gi_out: Tensor, zp: Tensor, vp: Tensor, g_a: Tensor | None):
        gi, gv_next = _into(gi_out, gv), gv * self.alpha * (1.0 - zp)
        gzp = -gv * self.alpha * vp if self.grad_reset else None  # alpha v_{t-1} (1 - z_{t-1})
        return gi, gv_next, gzp, g_a

    def _multiplicative_all(self, t: int, gv: Tensor, gi_out: Tensor, zp: Tensor, vp: Tensor, g_a: Tensor | None):
        gi = torch.mul(gv, 1.0 - zp, out=gi_out)
        gzp = -gv * self.pre_reset[t] if self.grad_reset and self.pre_reset is not None else None
        return gi, gi * self.alpha, gzp, g_a

    def _none(self, t: int, gv: Tensor, gi_out: Tensor, zp: Tensor, vp: Tensor, g_a: Tensor | None):
        return _into(gi_out, gv), gv * self.alpha, None, g_a


def autocast_on(device_type: str) -> bool:
    """Whether ``torch.autocast`` is active for tensors of ``device_type`` (never for a device type autocast
    does not know, such as ``meta``)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    except RuntimeError:  # "unknown device type for autocast"
        return False


def run_fused(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """The torch time loop with the hand-written BPTT backward: same arguments and results as
    ``run_reference`` (which it defers to when ``needs_reference(dyn)``), dense products. Inside
    ``torch.autocast`` (mixed precision: the input projection ran in bfloat16 / float16) the time loop runs
    outside it, in the layer's dtype: voltages, the recurrent products, the SG derivative and the backward
    keep full precision, and the current's gradient goes back in the current's dtype."""
    if needs_reference(dyn):
        return run_reference(current, weight_hh, dyn, state, return_voltage)
    if autocast_on(current.device.type):
        dtype = dyn.alpha.dtype
        full = NeuronState(state.v.to(dtype), state.z.to(dtype), None if state.a is None else state.a.to(dtype))
        with torch.autocast(current.device.type, enabled=False):
            return run_fused(current.to(dtype), weight_hh, dyn, full, return_voltage)
    rho = beta_adapt = a0 = None
    if dyn.adaptive:
        rho, beta_adapt, a0 = adaptation(dyn, state.a)
    cfg = LoopConfig(dyn.spike_fn, dyn.reset, dyn.detach_reset, rho, beta_adapt, return_voltage)
    z, v, v_last, z_last, a_last = FusedSequence.apply(
        current, weight_hh, dyn.alpha, dyn.threshold, state.v, state.z, a0, cfg
    )
    return z, v, NeuronState(v_last, z_last, a_last if dyn.adaptive else state.a)
