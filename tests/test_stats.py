"""spikestab.stats against independent references: scipy.stats' tests and hand-computed small cases."""

import itertools
import math
import statistics

import pytest
from scipy import stats as ss

from spikestab import stats

A = [0.84, 0.86, 0.81, 0.85, 0.83]
B = [0.82, 0.85, 0.80, 0.86, 0.80]
C = [0.71, 0.74, 0.69, 0.78, 0.72, 0.75, 0.70]


def test_describe_is_the_sample_std():
    s = stats.describe([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3)) == statistics.stdev([1, 2, 3, 4])
    assert s.sem == pytest.approx(math.sqrt(5 / 3) / 2)
    assert stats.describe([0.5]).std == 0.0
    assert s.text(scale=1.0) == "2.5 +- 1.3"


def test_paired_hand_computed():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3), df 2; t_0.975(2) = 4.302653
    d = stats.paired([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert (d.n, d.df, d.estimate) == (3, 2, 2.0)
    assert d.statistic == pytest.approx(2 * math.sqrt(3))
    half = 4.302653 / math.sqrt(3)
    assert d.ci == pytest.approx((2 - half, 2 + half), abs=1e-6)
    # two-sided p of t = 3.4641 with 2 df: 1 - t/sqrt(t^2 + 2) (closed form for df = 2)
    t = 2 * math.sqrt(3)
    assert d.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)


def test_paired_and_welch_match_scipy():
    d = stats.paired(A, B)
    ref = ss.ttest_rel(A, B)
    assert d.statistic == pytest.approx(ref.statistic) and d.p == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert d.ci == pytest.approx((lo, hi))
    w = stats.welch(A, C)
    ref = ss.ttest_ind(A, C, equal_var=False)
    assert w.statistic == pytest.approx(ref.statistic) and w.p == pytest.approx(ref.pvalue)
    assert w.ci == pytest.approx(tuple(ref.confidence_interval(0.95)))
    w90 = stats.welch(A, C, level=0.9)
    assert w90.ci == pytest.approx(tuple(ref.confidence_interval(0.9)))
    assert w.df == pytest.approx(ref.df)


def test_equivalence_is_two_one_sided_scipy_tests():
    diffs = [a - b for a, b in zip(A, B)]
    margin = 0.02
    e = stats.equivalence(A, B, margin)
    lower = ss.ttest_1samp(diffs, -margin, alternative="greater").pvalue
    upper = ss.ttest_1samp(diffs, margin, alternative="less").pvalue
    assert e.p == pytest.approx(max(lower, upper))
    # the 90 % interval lies inside +- margin exactly when equivalent
    lo, hi = ss.ttest_1samp(diffs, 0.0).confidence_interval(0.90)
    assert e.ci == pytest.approx((lo, hi))
    assert e.equivalent == (-margin < lo and hi < margin)
    assert not stats.equivalence(A, B, 0.001).equivalent
    assert stats.equivalence([0.5] * 40, [0.5 + 0.001 * (i % 3 - 1) for i in range(40)], 0.01).equivalent


def test_anova_and_pearson_match_scipy():
    groups = [A, B, C]
    a = stats.anova(groups)
    ref = ss.f_oneway(*groups)
    assert a.f == pytest.approx(ref.statistic) and a.p == pytest.approx(ref.pvalue)
    assert a.df == (2, len(A) + len(B) + len(C) - 3)
    c = stats.pearson(A, B)
    ref = ss.pearsonr(A, B)
    assert c.r == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)


def test_verdicts_are_never_stronger_than_the_test():
    far = stats.paired([0.9, 0.91, 0.92, 0.9], [0.8, 0.8, 0.82, 0.81])
    assert far.p < 0.05
    assert stats.directional(far, "greater") == "held"
    assert stats.directional(far, "less") == "not held"
    noisy = stats.paired([0.9, 0.7, 0.85, 0.6], [0.8, 0.8, 0.8, 0.8])
    assert noisy.p > 0.05 and stats.directional(noisy, "greater") == "inconclusive"
    # a tight null result: the directional claim is refuted by equivalence, the no-difference claim held
    same_a = [0.80 + 0.001 * i for i in range(10)]
    same_b = [0.80 + 0.001 * i + 0.0005 * (-1) ** i for i in range(10)]
    d = stats.paired(same_a, same_b)
    e = stats.equivalence(same_a, same_b, 0.02)
    assert e.equivalent and stats.no_difference(d, e) == "held"
    assert stats.directional(d, "greater", equiv=e) == "not held"
    assert stats.no_difference(noisy, stats.equivalence([0.9, 0.7, 0.85, 0.6], [0.8] * 4, 0.02)) == "inconclusive"
    far_e = stats.equivalence([0.9, 0.91, 0.92, 0.9], [0.8, 0.8, 0.82, 0.81], 0.02)
    assert stats.no_difference(far, far_e) == "not held"


def test_non_inferiority_reads_the_one_sided_bound():
    diffs_ok = [0.01, 0.0, 0.005, -0.005, 0.01, 0.0]  # mean +0.33 points, tight: above -2 points
    e = stats.equivalence(diffs_ok, None, 0.02)
    assert e.ci[0] > -0.02 and stats.non_inferior(e) == "held"
    worse = stats.equivalence([-0.10, -0.09, -0.11, -0.10], None, 0.02)
    assert worse.ci[1] < -0.02 and stats.non_inferior(worse) == "not held"
    noisy = stats.equivalence([0.05, -0.08, 0.02, -0.04], None, 0.02)
    assert stats.non_inferior(noisy) == "inconclusive"
    # the bound is scipy's one-sided 95 % bound of the mean difference
    ref = ss.ttest_1samp(diffs_ok, 0.0, alternative="greater").confidence_interval(0.95).low
    assert e.ci[0] == pytest.approx(ref)


def test_text_states_test_ci_and_p():
    t = stats.paired(A, B).text()
    assert "95 % CI" in t and "paired t, n = 5" in t and "p = " in t
    assert stats.format_p(0.0004) == "p < 0.001" and stats.format_p(0.0456) == "p = 0.046"


def test_best_of_k_against_enumeration():
    values = [0.3, 0.1, 0.7, 0.5, 0.2, 0.9]
    for k in range(1, len(values) + 1):
        subsets = list(itertools.combinations(values, k))
        assert stats.best_of_k(values, k) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))
    assert stats.best_of_k(values, 1) == pytest.approx(statistics.fmean(values))
    with pytest.raises(ValueError):
        stats.best_of_k(values, 7)
    scores = [0.2, 0.9, 0.1, 0.5, 0.4, 0.3]  # e.g. validation accuracy picks, values are test accuracy
    for k in range(1, len(values) + 1):
        subsets = list(itertools.combinations(range(len(values)), k))
        expected = sum(values[max(s, key=lambda i: scores[i])] for s in subsets) / len(subsets)
        assert stats.best_of_k(values, k, scores=scores) == pytest.approx(expected)


def test_sign_test_matches_scipy_binomtest():
    for k, n in ((7, 10), (30, 40), (5, 5), (0, 3)):
        assert stats.sign_test(k, n) == pytest.approx(ss.binomtest(k, n, 0.5, alternative="greater").pvalue)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        stats.one_sample([1.0])
    with pytest.raises(ValueError):
        stats.describe([float("nan")])
    with pytest.raises(ValueError):
        stats.equivalence(A, B, 0.0)


def test_docs_verdict_blocks_are_regenerated_from_the_committed_data():
    """docs/RESULTS.md's claims table and docs/results/headline.md's in-sample table are what
    experiments/verdicts.py computes from the committed results (a hand edit or a changed result without
    regeneration fails here)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, str(root / "experiments" / "verdicts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
