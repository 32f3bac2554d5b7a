"""``stabilize``: apply stability conditions layer by layer to a built model, in place, and verify each
one by measurement (DESIGN.md principles 1-2). The paper's conditions I-IV are available exactly as
published (paper and measured modes); without ``conditions`` the recommended recipe ``RECIPE`` runs
(conditions D and G of ``spikestab.stability.drive``, chosen from measured training outcomes)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..dynamics import NeuronState
from ..neurons.layers import SpikingNeurons, require_spiking_layers
from .conditions import (
    III_VARIANTS,
    SOLVE_FOR,
    ConditionResult,
    check_rate,
    TransitionTerms,
    compose_recurrent,
    condition_i,
    condition_ii,
    condition_iii,
    condition_iv,
    paper_voltage_bounds,
    split_recurrent,
)
from .drive import GROWTH_RATIO, condition_d, condition_g
from .measure import Trace, layer_input, measure_layer, record, variance_ratio
from .report import MEASURED_BY, LayerReport, StabilityReport, rate_warning
from .solvers import secant_slope, solve_increasing

__all__ = ["stabilize", "CONDITIONS", "PAPER_CONDITIONS", "RECIPE", "MODES", "resolve_conditions"]

PAPER_CONDITIONS = ("I", "II", "III", "IV")
CONDITIONS = ("D", "I", "II", "III", "IV", "G")  # every condition, in the order stabilize applies them
RECIPE = ("D", "G")  # the recommended recipe: `conditions=None`, "auto" on the command line
MODES = ("paper", "measured")

_CLOCK = {"conditions_s": 0.0}
# (step, sample, neuron) entries behind the variance-ratio checks of the I/II rounds (1024 (step, sample)
# pairs at width 1024, every pair of a 4 x 200 batch up to width 256): they move the ratio by <= 1 %
# against a tolerance of 10 % (docs/results/stability.md). The reported ratio uses measure.RATIO_ENTRIES.
ROUND_RATIO_ENTRIES = 2**20


@contextmanager
def _condition_time():
    """Accumulate the time spent inside the condition functions themselves (not the simulations)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _CLOCK["conditions_s"] += time.perf_counter() - t0


@contextmanager
def _replaying(traces: dict[SpikingNeurons, Trace]):
    """While active, a sequence layer called on exactly the input of its recorded ``Trace`` (from the
    zero state, no voltages asked) returns the recorded output instead of running again, so capturing
    the input of layer k runs only layer k-1. ``record`` uses the layer's own kernel path, so the
    replayed spikes are the ones the layer would compute."""
    patched = []
    for layer, tr in traces.items():
        if layer.batch_first:
            continue

        def forward(x, state=None, return_voltage=False, _layer=layer, _tr=tr, _orig=layer.forward):
            if (state is None and not return_voltage and isinstance(x, Tensor) and x.shape == _tr.x.shape
                    and torch.equal(x, _tr.x)):
                final = NeuronState(_tr.v[-1], _tr.z[-1], _tr.a[-1] if _tr.a is not None else None)
                return _tr.z, final
            return _orig(x, state, return_voltage)

        layer.forward = forward
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


def _check_finite_model(layers: list[SpikingNeurons]) -> None:
    for i, layer in enumerate(layers):
        for name, t in list(layer.named_parameters()) + list(layer.named_buffers()):
            if t is not None and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"spiking layer {i} has non-finite values (NaN or inf) in {name}; stabilize needs finite weights")


def resolve_conditions(conditions: Iterable[str] | str | None) -> tuple[str, ...]:
    """The conditions named by ``conditions`` in application order: None or "auto" is ``RECIPE``; a
    string is split at commas or spaces. Raises ValueError for unknown names, an empty selection, and
    III together with G (both choose the dampening)."""
    if conditions is None:
        conditions = RECIPE
    if isinstance(conditions, str):
        conditions = [c for c in conditions.replace(",", " ").split() if c]
    conds = tuple(conditions)
    if conds == ("auto",):
        conds = RECIPE
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ValueError(f"conditions must be 'auto' or a non-empty subset of {list(CONDITIONS)}, got {list(conds)}")
    if "III" in conds and "G" in conds:
        raise ValueError("conditions III and G both choose the SG dampening: apply one of them, not both")
    return tuple(c for c in CONDITIONS if c in conds)


def _validate(model: nn.Module, conditions: Iterable[str] | str | None, mode: str, rate: float,
              solve_for: str) -> tuple[list[SpikingNeurons], tuple[str, ...]]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    conds = resolve_conditions(conditions)
    check_rate(rate)
    if solve_for not in SOLVE_FOR:
        raise ValueError(f"solve_for must be 'sharpness' or 'tail', got {solve_for!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = require_spiking_layers(model)
    if solve_for == "tail" and "IV" in conds:
        shapes = {layer.spike_fn.shape for layer in layers}
        if shapes != {"q-pseudospike"}:
            raise ValueError(f"solve_for='tail' needs q-pseudospike SGs in every layer, got {sorted(shapes)}")
    _check_finite_model(layers)
    return layers, conds


def _first_input(model: nn.Module, batch) -> Tensor:
    try:
        x = layer_input(model, batch, 0)
    except (RuntimeError, IndexError, TypeError) as err:
        raise ValueError(f"batch could not be run through the model: {err}") from err
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("batch must be finite: the first spiking layer receives NaN or inf")
    return x


@torch.no_grad()
def _set_recurrent(layer: SpikingNeurons, mean: Tensor, std: float, pattern: Tensor) -> None:
    layer.weight_hh.copy_(compose_recurrent(mean, std, pattern, layer.recurrent_mask, layer.weight_hh))


def _apply_i_ii(layer: SpikingNeurons, xs: Tensor, conds: tuple[str, ...], mode: str, rate: float,
                layer_index: int, rate_tol: float, ratio_tol: float, max_rounds: int,
                slope_hint: float | None = None) -> tuple[list[ConditionResult], Trace | None, float | None]:
    """Conditions I and II on the recurrent weights W = mu + sigma P (P the standardised pattern of the
    current weights). Measured mode alternates I (root find of a common shift of mu on the simulated
    rate) and II (exact quadratic for sigma on the last recorded spikes) until both measured quantities
    are within tolerance. Also returns the trace of the final weights on ``xs``
    (measured mode), which later conditions reuse (III and IV do not change the forward dynamics), and
    the rate's slope against the mean shift times the fan-in (``slope_hint`` in and out: the first
    bracket step of the next round or layer)."""
    out: list[ConditionResult] = []
    if layer.weight_hh is None or not bool(layer.recurrent_mask.any()):  # feed-forward, or one neuron
        for c in ("I", "II"):
            if c in conds:
                out.append(ConditionResult(c, "-", math.nan, "-", math.nan, False, fallback="unchanged: layer has no recurrent weights"))
        return out, None, slope_hint
    mask = layer.recurrent_mask
    mu, pattern, std = split_recurrent(layer.weight_hh.detach(), mask)
    alpha, thr = layer.alpha.detach(), layer.threshold.detach()
    beta = layer.beta_adapt if layer.adaptive else None
    w_eff = layer.recurrent_weight().detach()
    fan_in = int(mask.sum(1).max().item())
    with torch.no_grad():
        in_cur = layer.input_current(xs)
    res_i = res_ii = None
    if "I" in conds:
        with _condition_time():
            res_i = condition_i(w_eff, alpha, thr, layer.reset, rate=rate, beta_adapt=beta, fan_in=fan_in,
                                input_mean=None if mode == "paper" else in_cur.mean((0, 1)))
        # measured mode: one mean for all neurons (the neuron average of the formula, corrected below by
        # the rate root find), so that the mean adds no spread across neurons for condition II to undo
        mu = res_i.chosen if mode == "paper" else res_i.chosen.mean().expand_as(res_i.chosen).clone()
    if mode == "paper":
        if "II" in conds:
            moment2 = float((xs.double() ** 2).mean()) if layer_index == 0 else 0.5  # Bernoulli(1/2) spikes above
            with _condition_time():
                res_ii = condition_ii(layer.weight_ih.detach(), w_eff, mean=mu, input_moment2=moment2, fan_in=fan_in)
            std = math.sqrt(res_ii.chosen)
        _set_recurrent(layer, mu, std, pattern)
        return [r for r in (res_i, res_ii) if r is not None], None, slope_hint

    var_in = float((in_cur - layer.bias.detach()).double()[1:].var(-1, unbiased=False).mean())
    base = mu.clone()
    shift = 0.0
    # first bracket step: the mean shift that moves the stationary voltage by about a threshold (a
    # shift d adds d * fan_in * rate per step, integrated over ~1 / (1 - alpha) steps)
    thr_eff = float(thr.mean() + (0.0 if beta is None else beta.mean() * rate))
    step = thr_eff * float((1.0 - alpha).mean().clamp_min(1e-3)) / (max(fan_in, 1) * rate)
    root = None
    traces: dict[float, Trace] = {}
    tr = None  # the trace of the current weights, once known
    spike_var = rate * (1.0 - rate)
    _set_recurrent(layer, mu, std, pattern)

    def rate_gap(delta: float) -> float:
        _set_recurrent(layer, base + delta, std, pattern)
        traces[delta] = record(layer, xs, current=in_cur)
        return traces[delta].rate - rate

    for _ in range(max_rounds):
        if tr is None:
            tr = record(layer, xs, current=in_cur)
        rate_ok = res_i is None or abs(tr.rate - rate) <= rate_tol
        ratio = variance_ratio(tr, layer, ROUND_RATIO_ENTRIES)
        ratio_ok = "II" not in conds or abs(math.log(max(ratio, 1e-300))) <= math.log1p(ratio_tol)
        if rate_ok and ratio_ok:
            break
        # II on the spikes just recorded, unless I is still to move the rate so far that the spike
        # variance r (1 - r) changes by more than the ratio tolerance (then I goes first)
        if not ratio_ok and (res_i is None or abs(tr.rate * (1.0 - tr.rate) / spike_var - 1.0) <= ratio_tol):
            with _condition_time():
                res_ii = condition_ii(layer.weight_ih.detach(), w_eff, mean=mu, spikes=tr.previous("z")[1:],
                                      pattern=pattern, input_var=var_in, mask=mask)
            std = math.sqrt(res_ii.chosen)
            _set_recurrent(layer, mu, std, pattern)
            tr = None
            if not res_ii.feasible:
                break
        if res_i is not None:
            traces.clear()
            if tr is not None:
                traces[shift] = tr
            # rate per unit of shift x fan-in: carried over rounds and layers as the first step's slope
            slope = None if slope_hint is None else slope_hint / max(fan_in, 1)
            root = solve_increasing(rate_gap, shift, step, ftol=rate_tol, slope=slope,
                                    y0=None if tr is None else tr.rate - rate)
            found = secant_slope(root.history, root.x)
            if found:
                slope_hint = found * max(fan_in, 1)
            shift = root.x
            mu = base + shift
            _set_recurrent(layer, mu, std, pattern)
            tr = traces.get(shift)
    if tr is None:
        tr = record(layer, xs, current=in_cur)
        ratio = variance_ratio(tr, layer, ROUND_RATIO_ENTRIES)
    if res_i is not None:
        res_i.chosen = mu.float()
        res_i.residual = tr.rate - rate
        res_i.feasible = abs(tr.rate - rate) <= rate_tol
        if not res_i.feasible:
            res_i.fallback = "closest rate reached by shifting the recurrent mean" + ("" if root is None or root.feasible else " (no sign change)")
            if tr.rate == 0.0:
                res_i.note = ("the layer stays silent: without spikes the recurrent mean has no effect; raise the "
                              "input drive (bias via calibrate_firing_rate, or a lower threshold)")
        res_i.extra["mean_shift"] = shift
        out.append(res_i)
    if "II" in conds:
        if res_ii is None:  # already balanced
            res_ii = ConditionResult("II", "recurrent/input current variance ratio", 1.0, "recurrent weight variance", std**2, True)
        res_ii.chosen = std**2
        res_ii.residual = ratio - 1.0
        out.append(res_ii)
    return out, tr, slope_hint


def _apply_iii(layer: SpikingNeurons, variant: str) -> ConditionResult:
    w = layer.recurrent_weight()
    if w is None or not bool(layer.recurrent_mask.any()):
        return ConditionResult("III", "worst-case transition gain", 1.0, "dampening", layer.spike_fn.dampening.mean().item(), True,
                               note="no recurrent weights: the gain is alpha < 1 for any dampening; unchanged")
    with _condition_time():
        res = condition_iii(w.detach(), layer.alpha.detach(), layer.threshold.detach(), layer.reset, variant=variant)
    layer.spike_fn = layer.spike_fn.with_params(dampening=res.chosen.clone())
    return res


def _apply_iv(layer: SpikingNeurons, xs: Tensor, mode: str, solve_for: str, with_iii: bool,
              trace: Trace | None = None) -> ConditionResult:
    w = layer.recurrent_weight()
    w = torch.zeros(layer.hidden_size, layer.hidden_size) if w is None else w.detach()
    alpha, thr = layer.alpha.detach(), layer.threshold.detach()
    kw = dict(solve_for=solve_for, detach_reset=layer.detach_reset)
    if mode == "measured" and trace is None:
        trace = record(layer, xs)
    with _condition_time():
        if trace is None:
            kw["bounds"] = paper_voltage_bounds(layer.weight_ih.detach(), w, alpha, thr, layer.reset)
        else:
            kw["terms"] = TransitionTerms.from_trace(
                trace, w, alpha, layer.reset, layer.detach_reset,
                rho=layer.rho if layer.adaptive else None, beta_adapt=layer.beta_adapt if layer.adaptive else None)
        res = condition_iv(layer.spike_fn, w, alpha, thr, layer.reset, **kw)
    value = res.chosen
    if solve_for == "sharpness":
        layer.spike_fn = layer.spike_fn.with_params(sharpness=torch.tensor(float(value)))
    else:
        layer.spike_fn = layer.spike_fn.with_params(tail=float(value))
    if not res.feasible:
        best = res.extra["best_gain"]
        prefix = f"{res.note}; " if res.note else ""
        if with_iii and best < 1.0:
            res.note = prefix + (f"III and IV conflict: with III's dampening the best reachable mean-square gain is "
                        f"{best:.4g} (at {solve_for} {value:.4g})")
        else:
            res.note = prefix + f"no root in the bracket: best reachable mean-square gain {best:.4g} (at {solve_for} {value:.4g})"
    return res


def stabilize(
    model: nn.Module,
    batch,
    conditions: Iterable[str] | str | None = None,
    mode: str = "measured",
    *,
    rate: float = 0.5,
    growth_ratio: float = GROWTH_RATIO,
    solve_for: str = "sharpness",
    iii_variant: str | None = None,
    rate_tol: float = 0.01,
    ratio_tol: float = 0.1,
    max_rounds: int = 8,
    solve_batch: int = 8,
    measure: bool = True,
    jacobian_steps: int = 4,
) -> StabilityReport:
    """Apply stability conditions to every spiking layer of ``model``, in place, layer by layer, and
    measure what each achieved. Returns a :class:`StabilityReport`. ``conditions=None`` (or "auto")
    applies the recommended recipe ``RECIPE`` = D, G.

    ``batch`` is what the model's forward takes (x [T, B, N] for ``SNNClassifier``, tokens [T, B] for
    ``SNNLanguageModel``). Each layer's input statistics come from the layer below as already stabilised
    (captured with forward hooks, dropout off). Conditions (method.md section 3):

    - I: recurrent-weight mean for an initial firing rate ``rate`` (1/2 in the paper);
    - II: recurrent-weight variance equalising the recurrent and input current variances;
    - III: per-neuron dampening so the worst-case transition gain is at most 1 (variant ``iii_variant``:
      "c" by default in paper mode, "bounded" (guaranteed) in measured mode, or "mean");
    - IV: sharpness (``solve_for="sharpness"``, any SG shape) or tail q (``"tail"``, q-PseudoSpike) for a
      mean-square transition gain of 1;
    - D (first, spikestab's): one threshold per layer for an initial firing rate ``rate`` (root find on
      the simulated layer), so that the rate comes from the drive the layer receives;
    - G (last, spikestab's): one dampening per layer for a measured BPTT gradient growth per step of
      ``growth_ratio * mean(log alpha)`` (the leak's own decay times 1/2 by default). Not with III.

    ``mode="paper"`` uses the official code's formulas (per-neuron means for I); ``mode="measured"`` takes
    expectations over the recorded dynamics and iterates I/II on the simulated network until the measured
    rate is within ``rate_tol`` and the variance ratio within a factor ``1 + ratio_tol`` (root finds use
    the first ``solve_batch`` samples; the reported measurements use the whole batch). In measured mode
    condition I gives every neuron the same recurrent mean, so that I moves the mean of the recurrent
    current and II its spread across neurons, independently. Bad input raises ValueError
    before anything changes; if anything fails midway the model is restored exactly.

    Example:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = SNNClassifier(SNNConfig(40, 5, hidden_sizes=(64,), dropout=0.0))
        >>> x = (torch.rand(100, 4, 40) < 0.1).float()
        >>> report = stabilize(model, x, conditions=("I", "II"))
        >>> abs(report.layers[0].measurements["firing_rate"] - 0.5) < 0.05
        True
        >>> stabilize(model, x).conditions   # the recommended recipe
        ('D', 'G')
    """
    layers, conds = _validate(model, conditions, mode, rate, solve_for)
    variant = iii_variant or ("c" if mode == "paper" else "bounded")
    if variant not in III_VARIANTS:
        raise ValueError(f"iii_variant must be one of {sorted(III_VARIANTS)}, got {iii_variant!r}")
    if solve_batch < 1:
        raise ValueError(f"solve_batch must be >= 1, got {solve_batch}")
    _first_input(model, batch)
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spike_fns = [layer.spike_fn for layer in layers]
    report = StabilityReport(mode, conds)
    replay: dict[SpikingNeurons, Trace] = {}
    slope_hint = None
    _CLOCK["conditions_s"] = 0.0
    t_cond = t_sim = t_meas = 0.0
    start = time.perf_counter()
    try:
        for idx, layer in enumerate(layers):
            t0 = time.perf_counter()
            with _replaying(replay):
                x = layer_input(model, batch, idx)
            xs = x[:, :solve_batch]
            t_sim += time.perf_counter() - t0
            lr = LayerReport(idx, type(layer).__name__, layer.hidden_size, layer.reset)
            t0 = time.perf_counter()
            trace = None
            if "D" in conds:
                with _condition_time():
                    lr.conditions.append(condition_d(layer, xs, rate=rate, rate_tol=rate_tol))
            if "I" in conds or "II" in conds:
                results, trace, slope_hint = _apply_i_ii(layer, xs, conds, mode, rate, idx, rate_tol, ratio_tol,
                                                         max_rounds, slope_hint)
                lr.conditions += results
            if "III" in conds:
                lr.conditions.append(_apply_iii(layer, variant))
            if "IV" in conds:
                lr.conditions.append(_apply_iv(layer, xs, mode, solve_for, "III" in conds, trace))
            if "G" in conds:
                with _condition_time():
                    lr.conditions.append(condition_g(layer, xs, ratio=growth_ratio))
            t_cond += time.perf_counter() - t0
            full = None
            if measure or idx + 1 < len(layers):
                t0 = time.perf_counter()
                full = record(layer, x)  # the layer's output on the whole batch: the next layer's input
                replay[layer] = full
                t_sim += time.perf_counter() - t0
            if measure:
                t0 = time.perf_counter()
                lr.measurements = measure_layer(layer, x, jacobian_steps, solve_batch, trace=full)
                t_meas += time.perf_counter() - t0
                for c in lr.conditions:
                    c.measured = lr.measurements.get(MEASURED_BY[c.condition])
                warning = rate_warning(idx, lr.measurements["firing_rate"])
                if warning:
                    lr.notes.append(warning)
            for c in lr.conditions:
                if c.note:
                    lr.notes.append(f"{c.condition}: {c.note}")
            report.layers.append(lr)
    except BaseException:
        for layer, fn in zip(layers, spike_fns):
            layer.spike_fn = fn
        model.load_state_dict(snapshot)
        raise
    report.timings = {
        "total_s": time.perf_counter() - start, "apply_s": t_cond, "conditions_s": _CLOCK["conditions_s"],
        "capture_s": t_sim, "measure_s": t_meas,
    }
    return report
