"""Measurements of the quantities the stability conditions target, on any model built from spikestab
layers (docs/theory.md, "The transition derivative").

What "transition derivative" means here. The state of a layer is (v, z, a) with z_t = H(v_t - A_t). The
transition derivative is the Jacobian of the one-step map v_{t-1} -> v_t, with z_{t-1} recomputed from
v_{t-1} through the surrogate gradient and the adaptation a_{t-1} held fixed, so

    J_t = diag(d_t) + diag(r_t) W_hh diag(s_{t-1}),   s_{t-1} = SG(v_{t-1} - A_{t-1})

with r = 1 - z_{t-1} for ``multiplicative_all`` (else 1) and d the leak path: alpha (subtract, none),
alpha (1 - z_{t-1}) (multiplicative), alpha (1 - z_{t-1}) (multiplicative_all). With ``detach_reset=True``
(the default, and what the official code always does) the reset term contributes nothing; with
``detach_reset=False`` d gains the reset-path term (e.g. -A_t s_{t-1} for the subtractive reset). This is
exactly what ``torch.autograd`` differentiates, so :func:`measure_jacobian` computes it by autograd and the
conditions (``spikestab.stability.conditions``) use the same expression in closed form. For ALIF, the
gradient also flows v_{t-1} -> z_{t-1} -> a_t -> A_t -> z_t; it is not part of J (a is held fixed) but it
is part of the BPTT growth measured by :func:`measure_gradient_growth`, which differentiates the whole
sequence.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import kernels
from ..dynamics import Dynamics, NeuronState, adaptation, step
from ..neurons.layers import SpikingNeurons, require_spiking_layers, spiking_layers

__all__ = [
    "Trace",
    "record",
    "layer_input",
    "measure_firing_rate",
    "measure_variance_ratio",
    "measure_jacobian",
    "measure_worst_case_gain",
    "measure_gradient_growth",
    "growth_from_norms",
    "measure_layers",
    "seeded_normal",
]


@dataclass
class Trace:
    """A layer's run on one input, recorded without gradients; every field is [T, B, H] except x."""

    x: Tensor  # layer input [T, B, I]
    current: Tensor  # W_ih x + b (input current including the bias)
    weight_hh: Tensor | None  # the effective recurrent weights the run used
    v: Tensor  # voltages v_t
    z: Tensor  # spikes z_t
    thr: Tensor  # thresholds A_t (the constant threshold for LIF, broadcast)
    a: Tensor | None  # ALIF adaptation a_t
    _recurrent: Tensor | None = None

    @property
    def recurrent(self) -> Tensor:
        """W_hh z_{t-1} (zeros without recurrence), computed on first use as one matrix product over all
        steps (most recorded runs, e.g. those of a root find, only need the rate)."""
        if self._recurrent is None:
            z_prev = self.previous("z")
            with torch.no_grad():
                self._recurrent = (
                    z_prev @ self.weight_hh.t() if self.weight_hh is not None else torch.zeros_like(z_prev)
                )
        return self._recurrent

    @property
    def rate(self) -> float:
        """Mean firing rate over time, batch and neurons."""
        return self.z.mean().item()

    def previous(self, field: str) -> Tensor:
        """The recorded ``field`` shifted one step later: entry t holds the value at t - 1 (zero state at t=0)."""
        t = getattr(self, field)
        if field == "thr":
            first = t[:1]  # A_{-1} is irrelevant (z_{-1} = 0), use A_0's constant part
        else:
            first = torch.zeros_like(t[:1])
        return torch.cat([first, t[:-1]])


def _as_layer(layer: nn.Module) -> SpikingNeurons:
    if not isinstance(layer, SpikingNeurons):
        raise ValueError(
            f"layer must be a spikestab spiking layer (LIF, ALIF, LIFCell, ALIFCell), got {type(layer).__name__}"
        )
    return layer


@torch.no_grad()
def record(layer: SpikingNeurons, x: Tensor, current: Tensor | None = None, backend: str | None = None) -> Trace:
    """Run ``layer`` on x [T, B, I] from the zero state, without gradients, and record it.

    The sequence runs through the layer's own kernel path (``layer.sequence_current``: the same input
    projection, a subclass's own ``input_current`` included, and kernel as ``layer(x)``, so the spikes
    equal the layer's output bit for bit); ``backend`` overrides the kernel (e.g. "fused" for dense
    spikes, where the event-driven recurrent products are slower). ``current`` passes an already computed input
    current W_ih x + b
    (it does not change while only the recurrent weights do). The recurrent current W_hh z_{t-1} is
    recomputed when first asked for (``Trace.recurrent``), the ALIF adaptation by its recurrence.

    Examples:
        >>> from spikestab.neurons import LIF
        >>> tr = record(LIF(10, 32), (torch.rand(50, 4, 10) < 0.2).float())
        >>> tr.v.shape
        torch.Size([50, 4, 32])
    """
    layer = _as_layer(layer)
    if current is None:
        current, kernel = layer.sequence_current(x)
    else:
        kernel = kernels.select(layer.backend)
    if backend is not None:
        kernel = kernels.select(backend)
    dyn = layer.dynamics()
    w = layer.recurrent_weight()
    state = layer.initial_state(x.shape[1], current)
    z, v = _with_voltages(kernel, current, w, dyn, state)
    z_prev = torch.cat([state.z.to(z.dtype)[None], z[:-1]])
    a: Tensor | None = None
    if dyn.adaptive:
        rho, beta_adapt, a_t = adaptation(dyn, state.a)
        as_ = []
        for t in range(x.shape[0]):
            a_t = rho * a_t + (1.0 - rho) * z_prev[t]
            as_.append(a_t)
        a = torch.stack(as_)
        thr = dyn.threshold + beta_adapt * a
    else:
        thr = dyn.threshold.detach().expand_as(v)
    return Trace(x, current, None if w is None else w.detach(), v, z, thr, a)


def _with_voltages(
    kernel: kernels.Kernel, current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState
) -> tuple[Tensor, Tensor]:
    """Spikes and voltages [T, B, H] of ``kernel``'s run; RuntimeError if it returns no voltages."""
    z, v, _ = kernel(current, weight_hh, dyn, state, True)
    if v is None:
        raise RuntimeError("the kernel returned no voltages although asked for them")
    return z, v


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once a layer's input is known."""


def layer_input(model: nn.Module, batch, index: int) -> Tensor:
    """The input [T, B, I] that spiking layer ``index`` of ``model`` receives when the model runs on
    ``batch`` in eval mode (dropout off). Captured with a forward pre-hook; a sequence layer stops the
    forward pass there, per-step cells are collected over the whole pass and stacked along time."""
    layers = require_spiking_layers(model)
    if not -len(layers) <= index < len(layers):
        raise ValueError(f"index must be in [0, {len(layers)}), got {index}")
    target = layers[index]
    got: list[Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        got.append(x)
        if x.dim() == 3:
            raise _Captured

    handle = target.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(batch)
    except _Captured:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    if not got:
        raise ValueError(f"spiking layer {index} was not called by the model's forward pass on this batch")
    x = torch.stack(got) if got[0].dim() == 2 else got[0]
    if x.shape[-1] != target.input_size:
        raise ValueError(
            f"the batch gives spiking layer {index} inputs of width {x.shape[-1]}, "
            f"but its input_size is {target.input_size}"
        )
    return x.transpose(0, 1) if (target.batch_first and got[0].dim() == 3) else x


def measure_firing_rate(model: nn.Module, batch) -> list[float]:
    """Initial firing rate of every spiking layer (mean over time, batch and neurons), in order.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> m = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(16, 16)))
        >>> len(measure_firing_rate(m, (torch.rand(30, 2, 20) < 0.1).float()))
        2
    """
    return [record(layer, layer_input(model, batch, i)).rate for i, layer in enumerate(spiking_layers(model))]


def variance_ratio(trace: Trace, layer: SpikingNeurons, max_entries: int | None = None) -> float:
    """Recurrent over input current variance: Var_j(W_hh z_{t-1})_j / Var_j(W_ih x_t)_j, each the variance
    across the layer's neurons at one step, averaged over steps t >= 1 and the batch; nan without
    recurrence or without input-current spread. ``max_entries`` caps the (step, sample, neuron) entries
    used: at most ceil(max_entries / H) evenly strided (step, sample) pairs, which bounds the
    recurrent-current product; the estimate's relative error scales like 1 / sqrt(entries), so a fixed
    budget gives the same precision at every width.

    The spread across neurons at a given input is the variance over the weight ensemble that condition
    II's independence derivation computes. Fluctuations of the population rate, which shift every
    neuron's recurrent current together through the weight mean, are left out: they belong to the mean
    (condition I), not to the spread (condition II).
    """
    w = trace.weight_hh
    if w is None:
        return math.nan
    with torch.no_grad():
        h = w.shape[0]
        cur_in = (trace.current - layer.bias)[1:].reshape(-1, h)
        z_prev = trace.z[:-1].reshape(-1, h)  # z_{t-1} for t >= 1
        max_rows = None if max_entries is None else -(-max_entries // h)
        if max_rows is not None and cur_in.shape[0] > max_rows:
            stride = -(-cur_in.shape[0] // max_rows)
            cur_in, z_prev = cur_in[::stride], z_prev[::stride]
        cur_rec = z_prev @ w.t()
        v_in = cur_in.var(-1, unbiased=False).double().mean().item()
        v_rec = cur_rec.var(-1, unbiased=False).double().mean().item()
        return v_rec / v_in if v_in > 0 else math.nan


def measure_variance_ratio(model: nn.Module, batch) -> list[float]:
    """Recurrent over input current variance (across neurons, averaged over steps and batch, see
    :func:`variance_ratio`) per spiking layer: the quantity condition II sets to 1.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> m = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(16,)))
        >>> r = measure_variance_ratio(m, (torch.rand(30, 2, 20) < 0.1).float())
        >>> r[0] > 0
        True
    """
    out = []
    for i, layer in enumerate(spiking_layers(model)):
        out.append(variance_ratio(record(layer, layer_input(model, batch, i)), layer))
    return out


def _one_step(layer: SpikingNeurons, trace: Trace, t: int, v_prev: Tensor, reps: int = 1) -> Tensor:
    """v_t as a differentiable function of v_{t-1} (z_{t-1} recomputed through the SG, a_{t-1} fixed).
    ``v_prev`` may hold ``reps`` copies of the batch stacked along it (the recorded tensors are tiled)."""
    dyn = layer.dynamics()
    tile = lambda x: x if reps == 1 else x.repeat(reps, 1)  # noqa: E731
    n = v_prev.shape[0] // reps
    thr_prev = tile(trace.previous("thr")[t][:n])
    a_prev = tile(trace.previous("a")[t][:n]) if trace.a is not None else None
    z_prev = dyn.spike_fn(v_prev - thr_prev)
    return step(tile(trace.current[t][:n]), NeuronState(v_prev, z_prev, a_prev), layer.recurrent_weight(), dyn).v


def jacobian_at(layer: SpikingNeurons, trace: Trace, t: int, v_prev: Tensor | None = None) -> Tensor:
    """Exact dv_t/dv_{t-1} by autograd (batched vector-Jacobian products with the identity):
    [B, H, H] with J[b, j, i] = d v_t[b, j] / d v_{t-1}[b, i]. ``v_prev`` defaults to the recorded
    v_{t-1}; ``t`` must be >= 1."""
    if not 1 <= t < trace.v.shape[0]:
        raise ValueError(f"t must be in [1, {trace.v.shape[0]}), got {t}")
    vp = (trace.v[t - 1] if v_prev is None else v_prev).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        v_t = _one_step(layer, trace, t, vp)
        h = v_t.shape[-1]
        basis = torch.eye(h, dtype=v_t.dtype, device=v_t.device).unsqueeze(1).expand(h, *v_t.shape)
        (jac,) = torch.autograd.grad(v_t, vp, basis, is_grads_batched=True)
    return jac.permute(1, 0, 2).detach()


def measure_jacobian(
    layer: SpikingNeurons,
    x: Tensor,
    steps: int = 8,
    max_batch: int = 8,
    probes: int = 16,
    exact: bool = False,
    seed: int = 0,
    trace: Trace | None = None,
) -> dict:
    """Mean-square transition gain E ||J^T u||^2 / ||u||^2 of ``layer`` on input x [T, B, I], with J the
    exact autograd Jacobian dv_t/dv_{t-1} at ``steps`` time steps spread over the second half of the
    sequence, on at most ``max_batch`` samples.

    By default u are ``probes`` standard normal vectors per sample and step (seeded) and the gain is the
    average of ||J^T u||^2 / ||u||^2 (one batched vector-Jacobian product per step). With ``exact=True``
    the full Jacobian is formed and the exact expectation over isotropic u, ||J||_F^2 / H, is returned.
    This is the quantity condition IV sets to 1. ``trace`` passes an already recorded run of the layer
    on x (its first ``max_batch`` samples are used).

    Examples:
        >>> from spikestab.neurons import LIF
        >>> out = measure_jacobian(LIF(10, 32), (torch.rand(40, 2, 10) < 0.2).float(), steps=2)
        >>> sorted(out)
        ['mean_square_gain', 'steps']
    """
    layer = _as_layer(layer)
    trace = record(layer, x[:, :max_batch]) if trace is None else trace
    n_t = trace.v.shape[0]
    if n_t < 2:
        raise ValueError(f"x must have at least 2 time steps to measure a transition, got {n_t}")
    ts = sorted({max(1, int(round(n_t / 2 + k * (n_t / 2 - 1) / max(steps - 1, 1)))) for k in range(steps)})
    gen = torch.Generator().manual_seed(seed)
    gains = []
    for t in ts:
        if exact:
            jac = jacobian_at(layer, trace, t).double()[:max_batch]
            gains.append((jac**2).sum((1, 2)).mean().item() / jac.shape[-1])
            continue
        # all probes in one vector-Jacobian product: the batch is tiled once per probe
        vp0 = trace.v[t - 1][:max_batch].detach()
        vp = vp0.repeat(probes, 1).requires_grad_(True)
        with torch.enable_grad():
            v_t = _one_step(layer, trace, t, vp, reps=probes)
            u = seeded_normal((probes, *vp0.shape), gen, v_t).reshape(v_t.shape)
            (g,) = torch.autograd.grad(v_t, vp, u)
        gains.append(((g.double() ** 2).sum(-1) / (u.double() ** 2).sum(-1)).mean().item())
    return {"mean_square_gain": sum(gains) / len(gains), "steps": ts}


def worst_case_gain(layer: SpikingNeurons) -> float:
    """max_j (alpha_j + sum_i max(W_hh[j, i], 0) * dampening_i): the largest row sum of J over all
    voltages (the SG is at most its dampening), from the weights alone. Condition III bounds it by 1."""
    layer = _as_layer(layer)
    with torch.no_grad():
        alpha = layer.alpha.double()
        w = layer.recurrent_weight()
        if w is None:
            return alpha.max().item()
        damp = layer.spike_fn.dampening.double().expand(layer.hidden_size)
        return (alpha + w.double().clamp_min(0) @ damp).max().item()


def measure_worst_case_gain(layer: SpikingNeurons, x: Tensor) -> dict:
    """Worst-case gain from the weights (:func:`worst_case_gain`) and the same quantity from the autograd
    Jacobian evaluated where the SG peaks (v_{t-1} = A_{t-1}, i.e. centred voltage 0, no spike), at the
    middle step of the input x [T, B, I].

    Examples:
        >>> from spikestab.neurons import LIF
        >>> out = measure_worst_case_gain(LIF(10, 16), torch.zeros(10, 1, 10))
        >>> abs(out["from_weights"] - out["autograd_at_peak"]) < 1e-5
        True
    """
    layer = _as_layer(layer)
    trace = record(layer, x[:, :1])
    t = max(1, trace.v.shape[0] // 2)
    jac = jacobian_at(layer, trace, t, v_prev=trace.previous("thr")[t]).double()
    return {"from_weights": worst_case_gain(layer), "autograd_at_peak": jac.clamp_min(0).sum(-1).max().item()}


def measure_gradient_growth(layer: SpikingNeurons, x: Tensor, max_batch: int = 8, seed: int = 0) -> dict:
    """BPTT gradient-norm growth per time step over the whole sequence.

    Runs ``layer`` on x [T, B, I] (at most ``max_batch`` samples) with autograd, back-propagates the loss
    L = <u, v_{T-1}> (u standard normal, seeded) and fits log ||dL/dv_t|| against the number of steps back,
    T-1-t, by least squares over the steps where the gradient has neither underflowed nor overflowed.
    ``growth_per_step`` > 0
    means exploding, < 0 vanishing. All paths are included (recurrence, leak, ALIF adaptation).

    Examples:
        >>> from spikestab.neurons import LIF
        >>> g = measure_gradient_growth(LIF(10, 32), (torch.rand(60, 2, 10) < 0.2).float())
        >>> g["growth_per_step"] < 0.5
        True
    """
    layer = _as_layer(layer)
    x = x[:, :max_batch].detach()
    # only the gradient along the sequence is needed: no parameter gradients (weights, decay, threshold)
    dyn = dataclasses.replace(layer.dynamics(), alpha=layer.alpha.detach(), threshold=layer.threshold.detach())
    w = layer.recurrent_weight()
    w = None if w is None else w.detach()
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        current = layer.input_current(x).detach()
        state = layer.initial_state(x.shape[1], current)
        if layer.reset == "multiplicative_all":  # dv_t/dI_t = 1 - z_{t-1}: differentiate the voltages
            vs = []
            state = NeuronState(state.v.clone().requires_grad_(True), state.z, state.a)  # a graph to differentiate
            for t in range(x.shape[0]):
                state = step(current[t], state, w, dyn)
                vs.append(state.v)
            u = seeded_normal(vs[-1].shape, gen, vs[-1])
            grads = torch.autograd.grad((vs[-1] * u).sum(), vs)
        else:  # v_t = ... + I_t, so dL/dv_t = dL/dI_t: one kernel call and its (fused) backward
            current = current.requires_grad_(True)
            _, v = _with_voltages(kernels.select(layer.backend), current, w, dyn, state)
            u = seeded_normal(v.shape[1:], gen, v)
            (g,) = torch.autograd.grad((v[-1] * u).sum(), current)
            grads = g.unbind(0)
    return growth_from_norms(torch.stack([g.double().norm() for g in grads]))


def seeded_normal(shape: tuple[int, ...] | torch.Size, gen: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` from the seeded CPU generator ``gen``, in ``like``'s dtype on
    ``like``'s device: the same probe vectors on every device, so a measurement does not depend on where
    it runs (beyond the rounding of the device's arithmetic)."""
    return torch.randn(shape, generator=gen, dtype=like.dtype, device="cpu").to(like.device)


def growth_from_norms(norms: Tensor) -> dict:
    """The BPTT growth per step from the gradient norms ||dL/dv_t|| of L = <u, v_{T-1}>, t = 0 .. T-1:
    the least-squares slope of their log against the number of steps back, T-1-t, over the steps where
    the gradient has neither underflowed nor overflowed (``measure_gradient_growth``'s fit)."""
    norms = norms.double().flip(0)  # index k = k steps back
    ok = torch.isfinite(norms) & (norms > norms[0] * 1e-30)  # drop underflowed and overflowed steps
    k = torch.arange(len(norms), dtype=torch.float64, device=norms.device)[ok]
    y = norms[ok].log()
    if len(k) < 2:  # the gradient over- or underflowed within a step: growth +inf or -inf
        grew = bool((~torch.isfinite(norms[1:])).any()) or bool((norms[1:] > norms[0]).any())
        edge = math.inf if grew else -math.inf
        return {"growth_per_step": edge, "steps_fitted": int(len(k)), "log_norm_ratio": edge}
    slope = (((k - k.mean()) * (y - y.mean())).sum() / ((k - k.mean()) ** 2).sum()).item()
    return {"growth_per_step": slope, "steps_fitted": int(len(k)), "log_norm_ratio": (y[-1] - y[0]).item()}


def measure_layers(model: nn.Module, batch, jacobian_steps: int = 4, max_batch: int = 8) -> list[dict]:
    """Every measurement, per spiking layer of ``model`` on ``batch``: firing rate, current-variance
    ratio, worst-case gain (from the weights), mean-square gain (autograd Jacobian) and the BPTT
    gradient growth per step.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> m = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(16,)))
        >>> sorted(measure_layers(m, (torch.rand(30, 2, 20) < 0.1).float(), jacobian_steps=2)[0])[:3]
        ['firing_rate', 'growth_per_step', 'mean_square_gain']
    """
    out = []
    for i, layer in enumerate(spiking_layers(model)):
        x = layer_input(model, batch, i)
        out.append(measure_layer(layer, x, jacobian_steps, max_batch))
    return out


# (step, sample, neuron) entries behind the reported variance ratio: the estimate's relative error falls
# like 1 / sqrt(entries), and this budget stays within 1 % of using every entry (docs/results/stability.md)
RATIO_ENTRIES = 2**21


def measure_layer(
    layer: SpikingNeurons, x: Tensor, jacobian_steps: int = 4, max_batch: int = 8, trace: Trace | None = None
) -> dict:
    """:func:`measure_layers` for one layer on its input x [T, B, I] (``trace``: its recorded run on x,
    if already known). The variance ratio uses at most ``RATIO_ENTRIES`` (step, sample, neuron)
    entries."""
    trace = record(layer, x) if trace is None else trace
    jac = measure_jacobian(layer, x, jacobian_steps, max_batch, trace=trace)
    return {
        "firing_rate": trace.rate,
        "variance_ratio": variance_ratio(trace, layer, RATIO_ENTRIES),
        "worst_case_gain": worst_case_gain(layer),
        "mean_square_gain": jac["mean_square_gain"],
        "growth_per_step": measure_gradient_growth(layer, x, max_batch)["growth_per_step"],
    }
