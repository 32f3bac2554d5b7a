"""The statistics behind every experiment verdict, in one place.

Seeds are few (2-5), so every spread is the sample standard deviation (n - 1), every interval is
t-based, and every "held" / "not held" comes from a test at a stated level:

- :func:`describe`: n, mean, sample std and standard error of one arm;
- :func:`paired` (per-seed differences a_i - b_i, the arms share seeds) and :func:`welch` (independent
  arms) give the difference with its confidence interval and two-sided p-value;
- :func:`equivalence` is the two one-sided tests (TOST) for "no difference": equivalent when both
  one-sided tests reject at ``alpha`` against a stated ``margin`` (the (1 - 2 alpha) interval lies
  inside +- margin);
- :func:`anova` (one-way, several settings) and :func:`pearson` for claims about a shape or a trend;
- :func:`directional`, :func:`no_difference` and :func:`non_inferior` turn tests into a verdict that is
  never stronger than them: "held" only when significant at ``alpha`` in the claimed direction, "not
  held" only when significant the other way (or, for a directional claim, equivalent within the margin),
  "inconclusive" otherwise;
- :func:`best_of_k`: the expected best of k runs drawn from a grid's runs (what k grid runs are worth);
  :func:`sign_test`: whether a rule is right more often than a coin.

The t distribution comes from ``scipy.special`` (scipy is in the ``data`` extra), imported on use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["held", "not held", "inconclusive"]
ALPHA = 0.05


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    from scipy import special

    return float(special.stdtr(df, -t))


def _t_quantile(p: float, df: float) -> float:
    from scipy import special

    return float(special.stdtrit(df, p))


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{what}: non-finite value in {out}")
    return out


@dataclass(frozen=True)
class Sample:
    """One arm: n, mean, sample std (n - 1; 0 for one value), standard error of the mean."""

    n: int
    mean: float
    std: float
    sem: float

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``mean +- std`` scaled (default: fractions as percent)."""
        return f"{scale * self.mean:.{digits}f} +- {scale * self.std:.{digits}f}"


def describe(values: Sequence[float]) -> Sample:
    """n, mean, sample standard deviation and standard error of ``values`` (at least one)."""
    v = _finite(values, "describe")
    if not v:
        raise ValueError("describe: no values")
    n = len(v)
    mean = math.fsum(v) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return Sample(n, mean, std, std / math.sqrt(n))


@dataclass(frozen=True)
class Difference:
    """A difference (a - b) with its two-sided test and its confidence interval."""

    test: str  # "paired t", "Welch t", "one-sample t"
    n: int  # pairs (paired) or total runs (Welch)
    df: float
    estimate: float
    se: float
    ci: tuple[float, float]
    level: float
    statistic: float
    p: float

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p < alpha

    def text(self, scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
        """``+2.1 points (95 % CI -0.3 to +4.5; paired t, n = 5, p = 0.08)``."""
        lo, hi = (scale * c for c in self.ci)
        return (
            f"{scale * self.estimate:+.{digits}f}{unit} ({100 * self.level:.0f} % CI {lo:+.{digits}f} to "
            f"{hi:+.{digits}f}; {self.test}, n = {self.n}, {format_p(self.p)})"
        )


def format_p(p: float) -> str:
    """``p = 0.046`` (two significant digits), ``p < 0.001`` below."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _t_difference(test: str, n: int, estimate: float, se: float, df: float, level: float) -> Difference:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if se == 0.0:  # identical values: no spread to test against
        p = 1.0 if estimate == 0.0 else 0.0
        return Difference(
            test,
            n,
            df,
            estimate,
            0.0,
            (estimate, estimate),
            level,
            math.copysign(math.inf, estimate) if estimate else 0.0,
            p,
        )
    t = estimate / se
    half = _t_quantile(0.5 + level / 2, df) * se
    return Difference(
        test, n, df, estimate, se, (estimate - half, estimate + half), level, t, min(1.0, 2 * _t_sf(abs(t), df))
    )


def one_sample(values: Sequence[float], level: float = 0.95, null: float = 0.0) -> Difference:
    """Mean of ``values`` minus ``null``, t-based CI and two-sided p (n >= 2)."""
    s = describe(values)
    if s.n < 2:
        raise ValueError("one_sample: needs at least 2 values")
    return _t_difference("one-sample t", s.n, s.mean - null, s.sem, s.n - 1, level)


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """Per-seed differences a_i - b_i (same seeds, same order): mean, t-based CI, two-sided p."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} against {len(b)} values")
    d = one_sample([x - y for x, y in zip(_finite(a, "paired a"), _finite(b, "paired b"))], level)
    return Difference("paired t", d.n, d.df, d.estimate, d.se, d.ci, level, d.statistic, d.p)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """mean(a) - mean(b) of independent arms: Welch's t (unequal variances, Satterthwaite df)."""
    sa, sb = describe(a), describe(b)
    if sa.n < 2 or sb.n < 2:
        raise ValueError("welch: needs at least 2 values per arm")
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1)) if se > 0 else float(sa.n + sb.n - 2)
    return _t_difference("Welch t", sa.n + sb.n, sa.mean - sb.mean, se, df, level)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of |a - b| < margin: ``p`` is the larger one-sided p; ``ci`` the (1 - 2 alpha)
    interval, inside +- margin exactly when ``equivalent``."""

    test: str
    n: int
    estimate: float
    margin: float
    alpha: float
    ci: tuple[float, float]
    p: float

    @property
    def equivalent(self) -> bool:
        return self.p < self.alpha

    def text(self, scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
        lo, hi = (scale * c for c in self.ci)
        return (
            f"TOST ({self.test}, margin +-{scale * self.margin:.{digits}f}{unit}): "
            f"{100 * (1 - 2 * self.alpha):.0f} % CI {lo:+.{digits}f} to {hi:+.{digits}f}, {format_p(self.p)}"
        )


def equivalence(
    a: Sequence[float], b: Sequence[float] | None, margin: float, *, paired_arms: bool = True, alpha: float = ALPHA
) -> Equivalence:
    """TOST of a - b against +- ``margin`` (> 0). ``b`` None: ``a`` are already differences."""
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if b is None:
        d = one_sample(a)
    else:
        d = paired(a, b) if paired_arms else welch(a, b)
    se = d.se
    if se == 0.0:
        p = 0.0 if abs(d.estimate) < margin else 1.0
        ci = (d.estimate, d.estimate)
    else:
        p = max(_t_sf((d.estimate + margin) / se, d.df), _t_sf((margin - d.estimate) / se, d.df))
        half = _t_quantile(1 - alpha, d.df) * se
        ci = (d.estimate - half, d.estimate + half)
    return Equivalence(d.test, d.n, d.estimate, margin, alpha, ci, p)


@dataclass(frozen=True)
class Anova:
    """One-way ANOVA over groups: F, degrees of freedom, p (the null: all group means equal)."""

    f: float
    df: tuple[int, int]
    p: float

    def text(self) -> str:
        return f"one-way ANOVA F({self.df[0]}, {self.df[1]}) = {self.f:.2f}, {format_p(self.p)}"


def anova(groups: Sequence[Sequence[float]]) -> Anova:
    """One-way ANOVA of ``groups`` (at least 2 groups; each at least 1 value; some group >= 2)."""
    from scipy import special

    gs = [_finite(g, "anova") for g in groups]
    if len(gs) < 2 or any(not g for g in gs):
        raise ValueError("anova: needs at least 2 non-empty groups")
    n = sum(len(g) for g in gs)
    grand = math.fsum(x for g in gs for x in g) / n
    between = math.fsum(len(g) * (math.fsum(g) / len(g) - grand) ** 2 for g in gs)
    within = math.fsum((x - math.fsum(g) / len(g)) ** 2 for g in gs for x in g)
    d1, d2 = len(gs) - 1, n - len(gs)
    if d2 < 1:
        raise ValueError("anova: no within-group degrees of freedom")
    if within == 0.0:
        return Anova(math.inf if between else 0.0, (d1, d2), 0.0 if between else 1.0)
    f = (between / d1) / (within / d2)
    return Anova(f, (d1, d2), float(special.fdtrc(d1, d2, f)))


@dataclass(frozen=True)
class Correlation:
    """Pearson r with its two-sided p (t test with n - 2 df)."""

    r: float
    n: int
    p: float

    def text(self) -> str:
        return f"Pearson r = {self.r:+.2f} (n = {self.n}, {format_p(self.p)})"


def pearson(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Pearson correlation of paired values (n >= 3, neither constant)."""
    xs, ys = _finite(x, "pearson x"), _finite(y, "pearson y")
    if len(xs) != len(ys) or len(xs) < 3:
        raise ValueError("pearson: needs >= 3 pairs")
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(xs, ys))
    sxx, syy = math.fsum((a - mx) ** 2 for a in xs), math.fsum((b - my) ** 2 for b in ys)
    if sxx == 0 or syy == 0:
        raise ValueError("pearson: a constant variable")
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    df = len(xs) - 2
    p = 0.0 if abs(r) == 1.0 else 2 * _t_sf(abs(r) * math.sqrt(df / (1 - r * r)), df)
    return Correlation(r, len(xs), min(1.0, p))


def directional(
    d: Difference, claimed: Literal["greater", "less"], alpha: float = ALPHA, equiv: Equivalence | None = None
) -> Verdict:
    """A claim that a > b ("greater") or a < b ("less"), from the test of a - b: held when significant at
    ``alpha`` in the claimed direction; not held when significant the other way or when ``equiv`` shows
    equivalence within its margin; inconclusive otherwise."""
    sign = 1.0 if claimed == "greater" else -1.0
    if d.p < alpha:
        return "held" if sign * d.estimate > 0 else "not held"
    if equiv is not None and equiv.equivalent:
        return "not held"
    return "inconclusive"


def no_difference(d: Difference, equiv: Equivalence) -> Verdict:
    """A claim that a and b do not differ: held when equivalent within the margin (TOST at its alpha), not
    held when the two-sided test finds a difference at the same alpha, inconclusive otherwise."""
    if equiv.equivalent:
        return "held"
    return "not held" if d.p < equiv.alpha else "inconclusive"


def non_inferior(equiv: Equivalence) -> Verdict:
    """A claim that a matches or beats b (a >= b - margin), from the TOST of a - b: held when the (1 - 2 alpha)
    interval's lower end is above -margin (a one-sided test at alpha), not held when its upper end is below
    -margin (a worse by more than the margin), inconclusive otherwise."""
    if equiv.ci[0] > -equiv.margin:
        return "held"
    return "not held" if equiv.ci[1] < -equiv.margin else "inconclusive"


def best_of_k(values: Sequence[float], k: int, scores: Sequence[float] | None = None) -> float:
    """Expected ``value`` of the best of ``k`` items drawn without replacement (exact, over all subsets);
    "best" is the largest ``scores`` (default: the values themselves, e.g. validation picks, test counts).
    Sorted by score, the i-th lowest (1-based) is the best in C(i-1, k-1) of the C(n, k) subsets."""
    v = _finite(values, "best_of_k")
    s = v if scores is None else _finite(scores, "best_of_k scores")
    if len(s) != len(v):
        raise ValueError("best_of_k: scores and values differ in length")
    n = len(v)
    if not 1 <= k <= n:
        raise ValueError(f"best_of_k: k must be in 1..{n}, got {k}")
    ranked = [x for _, x in sorted(zip(s, v), key=lambda p: p[0])]
    return math.fsum(ranked[i - 1] * math.comb(i - 1, k - 1) for i in range(k, n + 1)) / math.comb(n, k)


def sign_test(successes: int, n: int) -> float:
    """One-sided exact binomial p of at least ``successes`` in ``n`` fair trials (more right than a coin)."""
    if not 0 <= successes <= n:
        raise ValueError(f"sign_test: 0 <= successes <= n, got {successes} of {n}")
    return math.fsum(math.comb(n, i) for i in range(successes, n + 1)) / 2**n
