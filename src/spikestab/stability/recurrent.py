"""Conditions I and II applied to one layer's recurrent weights, written W = mu + sigma P (P the
standardised pattern of the current weights): I sets the mean mu, II the spread sigma.

Paper mode applies the closed forms once. Measured mode alternates, on the simulated layer, I (a root
find of a common shift of mu on the measured rate) and II (the exact quadratic for sigma on the spikes
just recorded) until both measured quantities are within tolerance (docs/theory.md, conditions I and II).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..neurons.layers import SpikingNeurons
from .conditions import ConditionResult, compose_recurrent, condition_i, condition_ii, split_recurrent
from .measure import Trace, record, variance_ratio
from .options import StabilizeOptions, Timings
from .solvers import RootResult, secant_slope, solve_increasing

__all__ = ["ROUND_RATIO_ENTRIES", "apply_i_ii"]

# (step, sample, neuron) entries behind the variance-ratio checks of the I/II rounds (1024 (step, sample)
# pairs at width 1024, every pair of a 4 x 200 batch up to width 256): they move the ratio by <= 1 %
# against a tolerance of 10 % (docs/results/stability.md). The reported ratio uses measure.RATIO_ENTRIES.
ROUND_RATIO_ENTRIES = 2**20

_II = ("II", "recurrent/input current variance ratio", 1.0, "recurrent weight variance")


@dataclass
class _Fit:
    """The layer's recurrent weights as mean, spread and pattern, and what the rounds reuse."""

    layer: SpikingNeurons
    weight: Tensor  # the layer's recurrent weight parameter, written in place by apply
    xs: Tensor
    mask: Tensor
    mu: Tensor
    pattern: Tensor
    std: float
    fan_in: int
    in_cur: Tensor  # W_ih x + b on xs: it does not change while only the recurrent weights do
    w_eff: Tensor  # the effective recurrent weights before the conditions
    traces: dict[float, Trace] = field(default_factory=dict)

    @classmethod
    def of(cls, layer: SpikingNeurons, xs: Tensor) -> _Fit:
        """The fit of ``layer``'s recurrent weights; ValueError for a layer without them."""
        weight, mask, w_eff = layer.weight_hh, layer.recurrent_mask, layer.recurrent_weight()
        if weight is None or mask is None or w_eff is None:
            raise ValueError(f"conditions I and II need recurrent weights; this {type(layer).__name__} has none")
        mu, pattern, std = split_recurrent(weight.detach(), mask)
        with torch.no_grad():
            in_cur = layer.input_current(xs)
        return cls(layer, weight, xs, mask, mu, pattern, std, int(mask.sum(1).max().item()), in_cur, w_eff.detach())

    @torch.no_grad()
    def apply(self, mu: Tensor | None = None) -> None:
        """Write mean ``mu`` (default: the current one) and the current spread into the layer."""
        w = self.weight
        w.copy_(compose_recurrent(self.mu if mu is None else mu, self.std, self.pattern, self.mask, w))

    def record(self) -> Trace:
        return record(self.layer, self.xs, current=self.in_cur)


def _not_applicable(conds: tuple[str, ...]) -> list[ConditionResult]:
    return [
        ConditionResult(c, "-", math.nan, "-", math.nan, False, fallback="unchanged: layer has no recurrent weights")
        for c in ("I", "II")
        if c in conds
    ]


def _condition_i(fit: _Fit, opts: StabilizeOptions, timings: Timings) -> ConditionResult:
    """Condition I's closed form (measured mode: with the measured mean input current, one mean for all
    neurons, so that the mean adds no spread across neurons for condition II to undo)."""
    layer = fit.layer
    beta = layer.beta_adapt if layer.adaptive else None
    with timings.part("conditions_s"):
        res = condition_i(
            fit.w_eff,
            layer.alpha.detach(),
            layer.threshold.detach(),
            layer.reset,
            rate=opts.rate,
            beta_adapt=beta,
            fan_in=fit.fan_in,
            input_mean=None if opts.mode == "paper" else fit.in_cur.mean((0, 1)),
        )
    chosen = torch.as_tensor(res.chosen, device=layer.weight_ih.device)
    fit.mu = chosen if opts.mode == "paper" else chosen.mean().expand_as(chosen).clone()
    return res


def _paper_ii(fit: _Fit, layer_index: int, timings: Timings) -> ConditionResult:
    """Condition II's closed form; the layer input's E[x^2] is measured for the first layer and 1/2 above
    (Bernoulli(1/2) spikes)."""
    moment2 = float((fit.xs.double() ** 2).mean()) if layer_index == 0 else 0.5
    with timings.part("conditions_s"):
        res = condition_ii(
            fit.layer.weight_ih.detach(), fit.w_eff, mean=fit.mu, input_moment2=moment2, fan_in=fit.fan_in
        )
    fit.std = math.sqrt(res.chosen)
    return res


@dataclass
class _Rounds:
    """The measured-mode alternation of I (mean shift) and II (spread) on one layer."""

    fit: _Fit
    opts: StabilizeOptions
    timings: Timings
    want_i: bool
    want_ii: bool
    slope_hint: float | None
    var_in: float = 0.0
    base: Tensor = field(init=False)  # the recurrent mean before the rounds' shifts
    shift: float = 0.0
    step: float = 0.0
    root: RootResult | None = None
    res_ii: ConditionResult | None = None

    def __post_init__(self) -> None:
        fit, rate = self.fit, self.opts.rate
        layer = fit.layer
        alpha, thr = layer.alpha.detach(), layer.threshold.detach()
        beta = layer.beta_adapt if layer.adaptive else None
        self.var_in = float((fit.in_cur - layer.bias.detach()).double()[1:].var(-1, unbiased=False).mean())
        self.base = fit.mu.clone()
        # first bracket step: the mean shift that moves the stationary voltage by about a threshold (a
        # shift d adds d * fan_in * rate per step, integrated over ~1 / (1 - alpha) steps)
        thr_eff = float(thr.mean() + (0.0 if beta is None else beta.mean() * rate))
        self.step = thr_eff * float((1.0 - alpha).mean().clamp_min(1e-3)) / (max(fit.fan_in, 1) * rate)

    def rate_ok(self, tr: Trace) -> bool:
        return not self.want_i or abs(tr.rate - self.opts.rate) <= self.opts.rate_tol

    def ratio_ok(self, ratio: float) -> bool:
        return not self.want_ii or abs(math.log(max(ratio, 1e-300))) <= math.log1p(self.opts.ratio_tol)

    def spread_first(self, tr: Trace) -> bool:
        """Whether II may run on these spikes: unless I is still to move the rate so far that the spike
        variance r (1 - r) changes by more than the ratio tolerance (then I goes first)."""
        rate = self.opts.rate
        return not self.want_i or abs(tr.rate * (1.0 - tr.rate) / (rate * (1.0 - rate)) - 1.0) <= self.opts.ratio_tol

    def balance_spread(self, tr: Trace) -> bool:
        """Condition II on the spikes of ``tr``; False when it has no feasible spread (stop the rounds)."""
        fit = self.fit
        with self.timings.part("conditions_s"):
            self.res_ii = condition_ii(
                fit.layer.weight_ih.detach(),
                fit.w_eff,
                mean=fit.mu,
                spikes=tr.previous("z")[1:],
                pattern=fit.pattern,
                input_var=self.var_in,
                mask=fit.mask,
            )
        fit.std = math.sqrt(self.res_ii.chosen)
        fit.apply()
        return self.res_ii.feasible

    def shift_mean(self, tr: Trace | None) -> Trace | None:
        """Condition I: root find of the common mean shift on the simulated rate; returns the trace of the
        weights it settles on (recorded during the search), if any."""
        fit, rate = self.fit, self.opts.rate

        def rate_gap(delta: float) -> float:
            fit.apply(self.base + delta)
            fit.traces[delta] = fit.record()
            return fit.traces[delta].rate - rate

        fit.traces.clear()
        if tr is not None:
            fit.traces[self.shift] = tr
        # rate per unit of shift x fan-in: carried over rounds and layers as the first step's slope
        fan_in = max(fit.fan_in, 1)
        slope = None if self.slope_hint is None else self.slope_hint / fan_in
        self.root = solve_increasing(
            rate_gap,
            self.shift,
            self.step,
            ftol=self.opts.rate_tol,
            slope=slope,
            y0=None if tr is None else tr.rate - rate,
        )
        found = secant_slope(self.root.history, self.root.x)
        if found:
            self.slope_hint = found * fan_in
        self.shift = self.root.x
        fit.mu = self.base + self.shift
        fit.apply()
        return fit.traces.get(self.shift)

    def run(self) -> tuple[Trace, float]:
        """Alternate until the rate and the ratio are within tolerance (at most ``max_rounds``); the trace
        of the final weights and the variance ratio last measured."""
        fit = self.fit
        fit.apply()
        tr = None
        ratio = math.nan
        for _ in range(self.opts.max_rounds):
            if tr is None:
                tr = fit.record()
            ratio = variance_ratio(tr, fit.layer, ROUND_RATIO_ENTRIES)
            ratio_ok = self.ratio_ok(ratio)
            if self.rate_ok(tr) and ratio_ok:
                break
            if not ratio_ok and self.spread_first(tr):
                feasible = self.balance_spread(tr)
                tr = None
                if not feasible:
                    break
            if self.want_i:
                tr = self.shift_mean(tr)
        if tr is None:
            tr = fit.record()
            ratio = variance_ratio(tr, fit.layer, ROUND_RATIO_ENTRIES)
        return tr, ratio


def _finish_i(res_i: ConditionResult, rounds: _Rounds, tr: Trace) -> ConditionResult:
    """Condition I's result as measured on the final weights."""
    rate, root = rounds.opts.rate, rounds.root
    res_i.chosen = rounds.fit.mu.float()
    res_i.residual = tr.rate - rate
    res_i.feasible = abs(tr.rate - rate) <= rounds.opts.rate_tol
    if not res_i.feasible:
        res_i.fallback = "closest rate reached by shifting the recurrent mean" + (
            "" if root is None or root.feasible else " (no sign change)"
        )
        if tr.rate == 0.0:
            res_i.note = (
                "the layer stays silent: without spikes the recurrent mean has no effect; raise the "
                "input drive (bias via calibrate_firing_rate, or a lower threshold)"
            )
    res_i.extra["mean_shift"] = rounds.shift
    return res_i


def apply_i_ii(
    layer: SpikingNeurons,
    xs: Tensor,
    conds: tuple[str, ...],
    opts: StabilizeOptions,
    layer_index: int,
    timings: Timings,
    slope_hint: float | None = None,
) -> tuple[list[ConditionResult], Trace | None, float | None]:
    """Conditions I and/or II (those in ``conds``) on ``layer``, in place, from its input ``xs``.

    Returns their results, the trace of the final weights on ``xs`` in measured mode (later conditions
    reuse it: III and IV do not change the forward dynamics) and the rate's slope against the mean shift
    times the fan-in (``slope_hint`` in and out: the first bracket step of the next round or layer)."""
    mask = layer.recurrent_mask
    if layer.weight_hh is None or mask is None or not bool(mask.any()):  # feed-forward, or one neuron
        return _not_applicable(conds), None, slope_hint
    fit = _Fit.of(layer, xs)
    res_i = _condition_i(fit, opts, timings) if "I" in conds else None
    if opts.mode == "paper":
        res_ii = _paper_ii(fit, layer_index, timings) if "II" in conds else None
        fit.apply()
        return [r for r in (res_i, res_ii) if r is not None], None, slope_hint
    rounds = _Rounds(fit, opts, timings, res_i is not None, "II" in conds, slope_hint)
    tr, ratio = rounds.run()
    out = [] if res_i is None else [_finish_i(res_i, rounds, tr)]
    if "II" in conds:
        res_ii = rounds.res_ii or ConditionResult(*_II, fit.std**2, True)  # None: already balanced
        res_ii.chosen = fit.std**2
        res_ii.residual = ratio - 1.0
        out.append(res_ii)
    return out, tr, rounds.slope_hint
