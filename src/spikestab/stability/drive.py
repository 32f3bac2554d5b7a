"""Conditions D and G: the two measured-mode conditions of the recommended recipe (``stabilize`` with no
``conditions``), added because the paper's I-IV, applied to spikestab's default network (tau = 20 steps,
threshold 1, Glorot weights), left it silent or unstable in training (docs/results/stability_choice.md).

- **D (drive)**: one threshold per layer, set by a bracketed root find on the simulated network, so that
  the initial firing rate is ``rate`` (1/2, condition I's target). Condition I reaches the rate through a
  recurrent weight mean, calibration through a constant bias current; D reaches it by scaling the
  threshold to the drive the layer actually receives (input and recurrence), so that firing follows the
  input rather than a constant current. The threshold is the one parameter the grids show matters most.
- **G (growth)**: one dampening per layer, set by a bracketed root find on the measured BPTT gradient
  growth per step (``measure_gradient_growth``), so that the gradient of the whole sequence neither
  explodes nor dies through the recurrence: target ``ratio * mean(log alpha)``, by default 0.6 times the
  decay the leak alone would give (the gradient's memory horizon is 1/0.6 membrane time constants).
  Condition IV's unit mean-square gain does not control this growth for leaky neurons (J = alpha I +
  W diag(s) adds coherently), G targets it directly.

Both change one scalar per layer and leave the weights alone. Neither has a closed form: each quantity
is measured by simulating the layer on its recorded input, and each result reports what it reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..neurons.layers import SpikingNeurons
from .conditions import ConditionResult
from .measure import measure_gradient_growth, record
from .solvers import find_root, scan_root

__all__ = [
    "condition_d",
    "condition_g",
    "threshold_for_rate",
    "dampening_for_growth",
    "check_d_targets",
    "check_g_targets",
    "g_not_applicable",
    "growth_target",
    "THRESHOLD_RANGE",
    "SATURATION_MARGIN",
    "RATE_TOL_SHARE",
    "DAMPENING_RANGE",
    "GROWTH_RATIO",
]

THRESHOLD_RANGE = (1e-3, 1e3)  # factors of the layer's current threshold searched by D
SCAN_POINTS = 25  # log-spaced thresholds D scans from the top of THRESHOLD_RANGE down
# D never aims closer than this to the highest rate any threshold reaches: on the flat stretch next to it
# the threshold can fall by orders of magnitude for a rate change of a few points, and a tiny threshold
# makes every optimiser step huge relative to it (2 x 256 sl-MNIST: threshold 0.01, rate 0.46, did not
# learn; 0.1, rate 0.43, trained to 87 %)
SATURATION_MARGIN = 0.05
# D's rate tolerance is at most the target divided by this: an absolute tolerance (0.01 by default) would
# accept a silent layer for targets below half of it; 3 leaves every target >= 0.03 as it was
RATE_TOL_SHARE = 3
DAMPENING_RANGE = (1e-3, 30.0)  # absolute dampening values searched by G
GROWTH_RATIO = 0.6  # G's default target: this fraction of the leak's own decay per step, mean(log alpha)
# (0.6 chosen on sl-MNIST, 2x64 LIF, seeds 0-3: 85.1 % mean test accuracy vs 82.8 % at 0.5)


@torch.no_grad()
def _set_threshold(layer: SpikingNeurons, value: float) -> None:
    layer.threshold.fill_(value)


def condition_d(layer: SpikingNeurons, x: Tensor, rate: float = 0.5, rate_tol: float = 0.01) -> ConditionResult:
    """Set the layer's threshold (one value for all neurons) so that its firing rate on x [T, B, I] from
    the zero state is ``rate`` (:func:`threshold_for_rate` on the layer simulated by ``record``).

    Example:
        >>> from spikestab.neurons import LIF
        >>> _ = torch.manual_seed(0)
        >>> layer = LIF(40, 64)
        >>> res = condition_d(layer, (torch.rand(100, 4, 40) < 0.1).float(), rate=0.3)
        >>> res.feasible and 0.29 <= res.measured <= 0.3
        True
    """
    check_d_targets(rate, rate_tol)
    current = layer.sequence_current(x)[0].detach()

    def rate_at(theta: float) -> float:
        _set_threshold(layer, theta)
        return record(layer, x, current=current).rate

    return threshold_for_rate(
        rate_at, lambda theta: _set_threshold(layer, theta), layer.threshold.detach(), rate, rate_tol
    )


def check_d_targets(rate: float, rate_tol: float) -> None:
    """Raise ValueError unless ``rate`` is in (0, 1) and ``rate_tol`` > 0 (condition D's targets)."""
    if not (isinstance(rate, (int, float)) and 0.0 < rate < 1.0):
        raise ValueError(f"rate must be in the open interval (0, 1), got {rate!r}")
    if not rate_tol > 0:
        raise ValueError(f"rate_tol must be > 0, got {rate_tol!r}")


def threshold_for_rate(
    rate_at: Callable[[float], float],
    set_threshold: Callable[[float], None],
    threshold: Tensor,
    rate: float = 0.5,
    rate_tol: float = 0.01,
) -> ConditionResult:
    """Condition D on any spiking population: ``rate_at(theta)`` simulates it with threshold theta and
    returns its firing rate, ``set_threshold`` sets the chosen one, ``threshold`` is the current threshold
    (its mean is where the search starts; the result has its shape).

    The rate falls as the threshold rises, so a bracketed root find on log(threshold) over
    ``THRESHOLD_RANGE`` times the current mean threshold finds the largest threshold whose rate reaches
    ``rate_tol / 2`` below the target (``rate_tol`` at most ``rate / RATE_TOL_SHARE``): a log-spaced scan
    down from the top of the range (the rate is flat and, by a few thousandths, not monotone near its
    maximum, so a plain root find could stop anywhere on that flat stretch), then a root find between the
    first scan point that reaches it and the one above.
    When the rate cannot reach the target inside the range (neurons whose net drive stays negative never
    fire, so the rate saturates below 1/2 as the threshold falls) or lies within ``SATURATION_MARGIN`` of
    the highest reachable rate (the rate at the bottom of the range), the goal becomes
    ``SATURATION_MARGIN`` below that highest rate: the flat stretch next to it is where the threshold
    would collapse (and with it the scale every optimiser step is measured against); never below half the
    highest rate, so that a population that can fire only rarely is not made silent.
    """
    check_d_targets(rate, rate_tol)
    rate_tol = min(rate_tol, rate / RATE_TOL_SHARE)
    start = float(threshold.mean())
    lo, hi = start * THRESHOLD_RANGE[0], start * THRESHOLD_RANGE[1]
    rates: dict[float, float] = {}  # threshold -> simulated rate, so no threshold is simulated twice

    def cached(theta: float) -> float:
        if theta not in rates:
            rates[theta] = rate_at(theta)
        return rates[theta]

    highest = cached(lo)
    # near the highest rate, SATURATION_MARGIN below it; a population that fires at most a few percent (an
    # adaptive threshold that jumps by a fixed amount per spike) would be silenced by that margin: half its
    # highest rate instead
    goal = min(rate - rate_tol / 2, max(highest - SATURATION_MARGIN, highest / 2))
    step = (math.log(hi) - math.log(lo)) / (SCAN_POINTS - 1)
    grid = [math.exp(math.log(hi) - step * k) for k in range(SCAN_POINTS - 1)]
    grid.append(lo)  # exactly the bottom, whose rate (highest) reaches the goal by construction
    above = None  # the scan point just above the first one that reaches the goal (the rate at lo does)
    for theta in grid:
        if cached(theta) >= goal:
            break
        above = theta
    if above is not None:
        theta = find_root(lambda t: cached(t) - goal, theta, above, ftol=rate_tol / 4, log=True, max_iter=40).x
    reached = cached(theta)
    set_threshold(theta)
    res = ConditionResult(
        "D",
        "initial firing rate (through the threshold)",
        rate,
        "threshold",
        torch.full_like(threshold, theta),
        abs(reached - rate) <= rate_tol,
        residual=reached - rate,
        measured=reached,
    )
    res.extra["threshold_factor"] = theta / start
    if not res.feasible:
        res.fallback = (
            f"the largest threshold with a rate {SATURATION_MARGIN:g} below the highest reachable "
            f"({highest:.3g}), or half of it"
            if reached < rate
            else f"threshold with the closest rate in [{lo:.3g}, {hi:.3g}]"
        )
        res.note = (
            f"rate {reached:.3g}: {rate} is not reachable {SATURATION_MARGIN:g} below the highest rate any "
            f"threshold gives ({highest:.3g}; neurons whose net drive stays negative never fire)"
            if reached < rate
            else f"rate {reached:.3g} stays above {rate} for every threshold up to {hi:.3g}"
        )
    return res


def growth_target(layer: SpikingNeurons, ratio: float = GROWTH_RATIO) -> float:
    """G's target growth per step: ``ratio`` times the leak's own mean log decay, mean(log alpha)."""
    return ratio * float(torch.log(layer.alpha.detach().double()).mean())


def condition_g(
    layer: SpikingNeurons,
    x: Tensor,
    target: float | None = None,
    ratio: float = GROWTH_RATIO,
    tol: float = 2e-3,
    max_batch: int = 8,
) -> ConditionResult:
    """Set the layer's SG dampening (one value for all neurons, the SG's shape and sharpness kept) so that
    the BPTT gradient growth per step measured on x [T, B, I] (``measure_gradient_growth``, the first
    ``max_batch`` samples) is ``target`` (default ``growth_target(layer, ratio)``), by
    :func:`dampening_for_growth`. A layer without recurrent weights (whose growth is the leak's alone) is
    left unchanged and reported not applicable.

    Example:
        >>> from spikestab.neurons import LIF
        >>> _ = torch.manual_seed(0)
        >>> layer = LIF(40, 64, threshold=0.1)
        >>> res = condition_g(layer, (torch.rand(100, 4, 40) < 0.1).float(), target=-0.02)
        >>> res.feasible and abs(res.measured + 0.02) <= 2e-3
        True
    """
    check_g_targets(ratio, target, tol)
    goal = growth_target(layer, ratio) if target is None else float(target)
    fn = layer.spike_fn
    mask = layer.recurrent_mask
    if layer.recurrent_weight() is None or mask is None or not bool(mask.any()):
        return g_not_applicable(goal, float(fn.dampening.mean()))

    def growth_at(dampening: float) -> float:
        layer.spike_fn = fn.with_params(dampening=torch.tensor(dampening, device=fn.dampening.device))
        return measure_gradient_growth(layer, x, max_batch)["growth_per_step"]

    try:
        res = dampening_for_growth(growth_at, goal, tol)
    finally:
        layer.spike_fn = fn
    layer.spike_fn = fn.with_params(dampening=torch.tensor(res.chosen, device=fn.dampening.device))
    return res


def check_g_targets(ratio: float, target: float | None, tol: float) -> None:
    """Raise ValueError unless condition G's ``ratio`` and ``target`` are finite and ``tol`` > 0."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a finite number, got {ratio!r}")
    if target is not None and not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise ValueError(f"target must be a finite growth per step, got {target!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")


def g_not_applicable(goal: float, dampening: float) -> ConditionResult:
    """Condition G's result for a population without recurrence (left unchanged)."""
    return ConditionResult(
        "G",
        "BPTT gradient growth per step",
        goal,
        "dampening",
        dampening,
        False,
        fallback="unchanged: layer has no recurrent weights",
        note="without recurrence the growth is the leak's log(alpha) for any dampening",
    )


def dampening_for_growth(growth_at: Callable[[float], float], goal: float, tol: float = 2e-3) -> ConditionResult:
    """Condition G on any spiking population: ``growth_at(d)`` measures its BPTT growth per step with SG
    dampening d. The growth rises with the dampening; the root of growth - ``goal`` is bracketed by a
    log-spaced scan of ``DAMPENING_RANGE``, then refined. The caller installs the chosen dampening
    (``res.chosen``)."""
    # a log-spaced scan first: the growth is flat at small dampening and steep at large, which a regula
    # falsi over the whole range converges on only slowly
    root = scan_root(lambda d: growth_at(d) - goal, *DAMPENING_RANGE, points=16, log=True, ftol=tol, max_iter=40)
    reached = root.value + goal
    res = ConditionResult(
        "G",
        "BPTT gradient growth per step",
        goal,
        "dampening",
        root.x,
        root.feasible and abs(root.value) <= tol,
        residual=root.value,
        measured=reached,
    )
    if not res.feasible:
        res.fallback = f"dampening with the closest growth in {list(DAMPENING_RANGE)}"
        res.note = f"growth {reached:.3g}/step is the closest to {goal:.3g} any dampening in the range reaches"
    return res
