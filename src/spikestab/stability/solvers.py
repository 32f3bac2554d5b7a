"""Deterministic scalar root finders used by the stability conditions and the rate calibration.

Every solver is bracketed: it either returns a point where the function changes sign (refined by the
Anderson-Bjorck variant of regula falsi, which keeps the bracket and converges superlinearly), or reports
``feasible=False`` together with the best point it saw (the argmin of |f| over the points it evaluated).
No randomness is involved, so the same inputs always give the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RootResult", "find_root", "scan_root", "solve_increasing", "secant_slope"]


@dataclass
class RootResult:
    """Outcome of a bracketed root search for f(x) = 0."""

    x: float
    value: float  # f(x)
    feasible: bool  # a sign change (or a value within ftol) was found
    evals: int
    fallback: str | None = None  # what ``x`` is when infeasible
    history: list[tuple[float, float]] = field(default_factory=list)


def _best(history: list[tuple[float, float]]) -> tuple[float, float]:
    return min(history, key=lambda p: abs(p[1]))


def find_root(
    f: Callable[[float], float],
    lo: float,
    hi: float,
    *,
    f_lo: float | None = None,
    f_hi: float | None = None,
    ftol: float = 0.0,
    xtol: float = 1e-10,
    max_iter: int = 100,
    log: bool = False,
) -> RootResult:
    """Root of ``f`` in [lo, hi] where f(lo) and f(hi) have opposite signs (Anderson-Bjorck regula falsi).

    Stops when |f(x)| <= ftol, when the bracket is narrower than ``xtol`` (relative to |x|), or after
    ``max_iter`` evaluations. With ``log=True`` the search runs on log(x) (for scale parameters).
    """
    history: list[tuple[float, float]] = []

    def ev(x: float) -> float:
        y = float(f(x))
        history.append((x, y))
        return y

    a, b = (math.log(lo), math.log(hi)) if log else (lo, hi)
    to_x = math.exp if log else (lambda s: s)
    fa = ev(lo) if f_lo is None else f_lo
    fb = ev(hi) if f_hi is None else f_hi
    if f_lo is not None:
        history.append((lo, fa))
    if f_hi is not None:
        history.append((hi, fb))
    if fa == 0 or abs(fa) <= ftol:
        return RootResult(lo, fa, True, len(history), history=history)
    if fb == 0 or abs(fb) <= ftol:
        return RootResult(hi, fb, True, len(history), history=history)
    if (fa > 0) == (fb > 0):
        x, y = _best(history)
        return RootResult(x, y, False, len(history), "argmin |f| over the bracket ends", history)
    side = 0
    for _ in range(max_iter):
        c = (a * fb - b * fa) / (fb - fa)
        if not (min(a, b) < c < max(a, b)):
            c = 0.5 * (a + b)
        fc = ev(to_x(c))
        if fc == 0 or abs(fc) <= ftol or abs(b - a) <= xtol * max(1.0, abs(c)):
            return RootResult(to_x(c), fc, True, len(history), history=history)
        # Anderson-Bjorck: when the same end is kept twice in a row, scale its value by
        # m = 1 - f(c) / f(replaced end) (0.5 if m <= 0), which unsticks it faster than halving
        if (fc > 0) == (fb > 0):
            m = 1.0 - fc / fb
            b, fb = c, fc
            if side == -1:
                fa *= m if m > 0 else 0.5
            side = -1
        else:
            m = 1.0 - fc / fa
            a, fa = c, fc
            if side == 1:
                fb *= m if m > 0 else 0.5
            side = 1
    x, y = _best(history)
    return RootResult(x, y, True, len(history), history=history)


def scan_root(
    f: Callable[[float], float], lo: float, hi: float, *, points: int = 25, log: bool = True, **kw
) -> RootResult:
    """Scan ``points`` grid values over [lo, hi] for the first sign change, then refine it with
    :func:`find_root`. No sign change: ``feasible=False`` and x = argmin |f| over the grid."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    if log:
        grid = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * k / (points - 1)) for k in range(points)]
    else:
        grid = [lo + (hi - lo) * k / (points - 1) for k in range(points)]
    values = [float(f(x)) for x in grid]
    history = list(zip(grid, values))
    for k in range(points - 1):
        y0, y1 = values[k], values[k + 1]
        if y0 == 0:
            return RootResult(grid[k], y0, True, points, history=history)
        if (y0 > 0) != (y1 > 0):
            res = find_root(f, grid[k], grid[k + 1], f_lo=y0, f_hi=y1, log=log, **kw)
            res.history = history + res.history
            res.evals += points
            return res
    x, y = _best(history)
    return RootResult(x, y, False, points, "argmin |f| over the bracket", history)


def solve_increasing(
    f: Callable[[float], float],
    x0: float,
    step: float,
    *,
    ftol: float,
    max_expand: int = 40,
    max_iter: int = 40,
    slope: float | None = None,
    y0: float | None = None,
) -> RootResult:
    """Root of a non-decreasing ``f`` near ``x0``: expand a bracket from x0 in the direction that
    reduces |f| (each step the secant extrapolation of the last two points lengthened by half, at most
    four times the distance covered), then refine with :func:`find_root`. Any evaluated point with
    |f| <= ftol ends the search. With a known ``slope`` estimate the first step is a Newton step
    lengthened by half (1.5 |f(x0)| / slope), so that it usually brackets the root at once; ``y0``
    passes an already known f(x0)."""
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    history: list[tuple[float, float]] = []
    y0 = float(f(x0)) if y0 is None else float(y0)
    history.append((x0, y0))
    if abs(y0) <= ftol:
        return RootResult(x0, y0, True, 1, history=history)
    direction = -1.0 if y0 > 0 else 1.0
    prev_x, prev_y = x0, y0
    h = 1.5 * abs(y0) / slope if slope is not None and slope > 0 else step
    for _ in range(max_expand):
        x = prev_x + direction * h
        y = float(f(x))
        history.append((x, y))
        if abs(y) <= ftol:
            return RootResult(x, y, True, len(history), history=history)
        if (y > 0) != (prev_y > 0):
            lo, hi, flo, fhi = (prev_x, x, prev_y, y) if direction > 0 else (x, prev_x, y, prev_y)
            res = find_root(f, lo, hi, f_lo=flo, f_hi=fhi, ftol=ftol, max_iter=max_iter)
            res.history = history + res.history
            res.evals = len(res.history)
            return res
        # next step: the secant through the last two points lengthened by half (so that it usually
        # brackets the root), at most four times the distance covered so far (flat f: just that)
        slope_xy = (y - prev_y) / (x - prev_x)
        h = min(1.5 * abs(y) / slope_xy if slope_xy > 0 else math.inf, 4.0 * abs(x - x0))
        prev_x, prev_y = x, y
    x, y = _best(history)
    return RootResult(x, y, False, len(history), "argmin |f| over the expanded bracket", history)


def secant_slope(history: list[tuple[float, float]], root: float) -> float | None:
    """|dy/dx| between the two evaluated points nearest ``root`` (None if they coincide)."""
    pts = sorted({x: y for x, y in history}.items(), key=lambda p: abs(p[0] - root))[:2]
    if len(pts) < 2 or pts[0][0] == pts[1][0]:
        return None
    (x0, y0), (x1, y1) = pts
    return abs((y1 - y0) / (x1 - x0))
