"""Unit tests of the stability engine against independent references: hand-derived formulas, numerical
integration, and plain autograd."""

import json
import math

import pytest
import torch

from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons import ALIF, LIF, RESETS
from spikestab.stability import (
    TransitionTerms,
    condition_i,
    condition_ii,
    condition_iii,
    condition_iv,
    measure_gradient_growth,
    measure_jacobian,
    measure_worst_case_gain,
)
from spikestab.stability.conditions import split_recurrent
from spikestab.stability.measure import jacobian_at, record, variance_ratio
from spikestab.stability.solvers import find_root, scan_root, secant_slope, solve_increasing
from spikestab.surrogate import SurrogateGradient

pytestmark = pytest.mark.usefixtures("one_thread")


# --- solvers ------------------------------------------------------------------------------------------


def test_find_root_brackets_and_converges():
    res = find_root(lambda x: x**3 - 2.0, 0.0, 3.0, xtol=1e-12)
    assert res.feasible and abs(res.x - 2 ** (1 / 3)) < 1e-9


def test_scan_root_reports_no_root_with_argmin():
    res = scan_root(lambda x: (x - 3.0) ** 2 + 1.0, 0.5, 10.0, points=31)
    assert not res.feasible and res.fallback
    assert abs(res.x - 3.0) < 0.3  # the grid point closest to the minimum of |f|


def test_solve_increasing_expands_bracket():
    res = solve_increasing(lambda x: math.tanh(x - 40.0), 0.0, 0.5, ftol=1e-6)
    assert res.feasible and abs(res.x - 40.0) < 1e-5
    bad = solve_increasing(lambda x: 0.5 + 0.1 * math.tanh(x), 0.0, 1.0, ftol=1e-6, max_expand=10)
    assert not bad.feasible


def test_solve_increasing_newton_first_step_and_known_value():
    calls = []

    def f(x):
        calls.append(x)
        return 2.0 * (x - 3.0)

    res = solve_increasing(f, 0.0, 1e-3, ftol=1e-9, slope=2.0, y0=-6.0)
    assert res.feasible and abs(res.x - 3.0) < 1e-9
    assert calls[0] == pytest.approx(4.5)  # 1.5 * |f(x0)| / slope, f(x0) not re-evaluated
    assert secant_slope(res.history, res.x) == pytest.approx(2.0)


def test_solve_increasing_extends_by_the_secant():
    calls = []

    def f(x):
        calls.append(x)
        return x - 5.0

    res = solve_increasing(f, 0.0, 1.0, ftol=1e-12)
    # x0 = 0, first step to 1 (f = -4, slope 1), then min(1.5 * 4 / 1, 4 * 1) = 4 further: the root
    assert calls == [0.0, 1.0, 5.0] and res.x == 5.0


def test_find_root_anderson_bjorck_unsticks_a_convex_end():
    # plain regula falsi keeps the same end on an exponential and crawls; the scaled end does not
    res = find_root(lambda x: math.exp(x) - 2.0, 0.0, 10.0, ftol=1e-10)
    assert res.feasible and abs(res.x - math.log(2.0)) < 1e-9 and res.evals <= 20


# --- condition I ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reset,expected",
    [
        ("subtract", lambda a, th, n: (3 - 2 * a) * th / (n - 1)),
        ("multiplicative", lambda a, th, n: (2 - a) * th / (n - 1)),
        ("multiplicative_all", lambda a, th, n: 2 * (2 - a) * th / (n - 1)),  # derived, not the code's 2(1-a)
    ],
)
def test_condition_i_matches_the_closed_form_at_half(reset, expected):
    n = 50
    alpha, th = torch.rand(n), torch.rand(n) + 0.1
    res = condition_i(torch.zeros(n, n), alpha, th, reset)
    assert res.feasible
    torch.testing.assert_close(res.chosen, expected(alpha, th, n).float())


def test_condition_i_stationary_mean_is_threshold():
    # mean-field check of the general-p formula: E[v] = A solves the stationary mean update
    n, p = 30, 0.3
    alpha, th, m = torch.full((n,), 0.6), torch.full((n,), 0.5), torch.full((n,), 0.05)
    k = n - 1
    for reset in RESETS:
        mu = condition_i(torch.zeros(n, n), alpha, th, reset, rate=p, input_mean=m).chosen.double()
        a, A, drive = alpha.double(), th.double(), m.double() + k * mu * p
        ev = {
            "subtract": (drive - A * p) / (1 - a),
            "multiplicative": drive / (1 - a * (1 - p)),
            "multiplicative_all": (1 - p) * drive / (1 - (1 - p) * a),
            "none": drive / (1 - a),
        }[reset]
        torch.testing.assert_close(ev, A)


def test_condition_i_rejects_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        condition_i(torch.zeros(3, 3), torch.zeros(3), torch.ones(3), "subtract", rate=1.0)


# --- condition II ---------------------------------------------------------------------------------------


def test_condition_ii_paper_formula_and_infeasible_fallback():
    torch.manual_seed(0)
    w_ih = torch.randn(20, 10) * 0.3
    w_hh = torch.zeros(20, 20)
    res = condition_ii(w_ih, w_hh, mean=0.01, input_moment2=0.2)
    expected = 2 * 10 * w_ih.double().var(unbiased=False).item() * 0.2 / 19 - 0.01**2 / 2
    assert res.feasible and abs(res.chosen - expected) < 1e-12
    neg = condition_ii(w_ih, w_hh, mean=5.0, input_moment2=0.2)
    assert not neg.feasible and neg.chosen == 0.0 and neg.fallback and neg.extra["formula_value"] < 0


def test_condition_ii_measured_equalises_variance_on_recorded_spikes():
    torch.manual_seed(0)
    h = 40
    mask = 1 - torch.eye(h)
    w = torch.randn(h, h) * 0.2 + 0.03
    mu, pattern, _ = split_recurrent(w, mask)
    z = (torch.rand(500, h) < 0.4).float()
    target = 0.37
    res = condition_ii(torch.zeros(h, 5), w, mean=mu, spikes=z, pattern=pattern, input_var=target, mask=mask)
    assert res.feasible
    w_new = (mu[:, None] + math.sqrt(res.chosen) * pattern) * mask
    cur = z.double() @ w_new.double().t()
    assert abs(cur.var(-1, unbiased=False).mean().item() - target) < 1e-6  # float32 weights


# --- condition III --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,expected", [(128, 0.204), (256, 0.144)])
def test_condition_iii_glorot_value(n, expected):
    torch.manual_seed(0)
    w = torch.empty(n, n)
    torch.nn.init.xavier_uniform_(w)
    w.fill_diagonal_(0)
    res = condition_iii(w, torch.full((n,), math.exp(-10)), torch.full((n,), 0.01), "subtract")
    assert abs(res.chosen_mean - 4 / math.sqrt(3 * n)) < 0.01
    assert abs(res.chosen_mean - expected) < 0.01


def test_condition_iii_bounded_guarantees_row_bound():
    torch.manual_seed(1)
    n = 64
    w = torch.randn(n, n) * 0.2
    w.fill_diagonal_(0)
    alpha = torch.rand(n) * 0.9
    res = condition_iii(w, alpha, torch.ones(n), "subtract", variant="bounded")
    rows = alpha.double() + w.double().clamp_min(0) @ res.chosen.double()
    assert rows.max().item() <= 1 + 1e-6
    assert abs(rows.max().item() - 1) < 1e-6  # tight: no dampening left on the table
    scalar = condition_iii(w, alpha, torch.ones(n), "subtract", variant="mean")
    assert torch.unique(scalar.chosen).numel() == 1


# --- condition IV ---------------------------------------------------------------------------------------


def test_condition_iv_paper_uses_uniform_mean_square():
    # independent reference: trapezoid integration of the exponential SG squared over the bounds
    n = 8
    torch.manual_seed(0)
    w = torch.rand(n, n)
    w.fill_diagonal_(0)
    alpha, th = torch.full((n,), 0.2), torch.full((n,), 0.1)
    lo, hi = -torch.rand(n) - 0.5, torch.rand(n) + 0.5
    sg = SurrogateGradient("exponential", dampening=1.3)
    res = condition_iv(sg, w, alpha, th, "subtract", bounds=(lo, hi), bracket=(0.05, 20.0))
    beta = res.chosen
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    ms = []
    for j in range(n):
        v = lo[j].double() + (hi[j] - lo[j]).double() * grid
        f2 = (1.3 * torch.exp(-2 * beta * v.abs())) ** 2
        ms.append(torch.trapezoid(f2, v).item() / (hi[j] - lo[j]).item())
    col = (w.double() ** 2).sum(0)
    gain = 0.04 + (col * torch.tensor(ms, dtype=torch.float64)).mean().item()
    assert res.feasible and abs(gain - 1) < 1e-4


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [True, False])
def test_transition_terms_equal_autograd_jacobian(cls, reset, detach):
    """The closed form used by condition IV and the autograd Jacobian are the same quantity."""
    torch.manual_seed(0)
    layer = cls(
        12,
        16,
        reset=reset,
        detach_reset=detach,
        tau=3.0,
        threshold=0.3,
        spike_fn=SurrogateGradient("sigmoid", dampening=torch.rand(16) + 0.5, sharpness=0.7),
    )
    with torch.no_grad():
        layer.weight_hh.add_(0.05)
    x = (torch.rand(20, 3, 12) < 0.3).float()
    tr = record(layer, x)
    terms = TransitionTerms.from_trace(
        tr,
        layer.recurrent_weight().detach(),
        layer.alpha.detach(),
        reset,
        detach,
        rho=layer.rho if layer.adaptive else None,
        beta_adapt=layer.beta_adapt if layer.adaptive else None,
        start=1,
    )
    s = layer.spike_fn.derivative(terms.u.float()).double()
    exact = torch.stack([(jacobian_at(layer, tr, t).double() ** 2).sum((1, 2)) for t in range(1, 20)])
    assert abs(terms.mean_square_gain(s) - exact.mean().item() / 16) < 1e-5 * max(1.0, exact.mean().item())


def test_transition_terms_refuse_rho_without_beta_adapt():
    """An ALIF layer's adaptation is rho and beta_adapt together: one alone is refused before any work (it
    was ignored, or an AttributeError on None with a non-detached subtractive reset)."""
    layer = ALIF(4, 6)
    tr = record(layer, (torch.rand(10, 2, 4) < 0.3).float())
    args = (tr, layer.recurrent_weight().detach(), layer.alpha.detach(), "subtract", False)
    with pytest.raises(ValueError, match="rho and beta_adapt together"):
        TransitionTerms.from_trace(*args, rho=layer.rho)
    with pytest.raises(ValueError, match="rho and beta_adapt together"):
        TransitionTerms.from_trace(*args, beta_adapt=layer.beta_adapt)


def test_measure_jacobian_random_probes_match_exact():
    torch.manual_seed(0)
    layer = LIF(10, 48, tau=5.0, threshold=0.2, spike_fn=SurrogateGradient("gaussian", 0.8, 2.0))
    x = (torch.rand(60, 4, 10) < 0.3).float()
    est = measure_jacobian(layer, x, steps=6, probes=64)["mean_square_gain"]
    exact = measure_jacobian(layer, x, steps=6, exact=True)["mean_square_gain"]
    assert abs(est - exact) < 0.05 * exact


def test_worst_case_gain_from_weights_equals_autograd_at_peak():
    torch.manual_seed(0)
    layer = ALIF(10, 24, tau=4.0, spike_fn=SurrogateGradient("triangular", torch.rand(24) + 0.1))
    out = measure_worst_case_gain(layer, (torch.rand(20, 2, 10) < 0.3).float())
    assert abs(out["from_weights"] - out["autograd_at_peak"]) < 1e-5


def test_gradient_growth_of_pure_leak_is_log_alpha():
    # no recurrence and a detached reset: dL/dv_t = alpha^(T-1-t) u exactly
    layer = LIF(5, 8, recurrent=False, tau=10.0)
    out = measure_gradient_growth(layer, (torch.rand(50, 2, 5) < 0.5).float())
    assert abs(out["growth_per_step"] - math.log(math.exp(-0.1))) < 1e-5


def test_variance_ratio_by_hand():
    torch.manual_seed(0)
    layer = LIF(6, 10, tau=2.0, threshold=0.1)
    x = (torch.rand(30, 3, 6) < 0.4).float()
    tr = record(layer, x)
    w = layer.recurrent_weight().detach()
    rec = torch.stack([tr.z[t - 1] @ w.t() for t in range(1, 30)])
    inp = torch.stack([x[t] @ layer.weight_ih.detach().t() for t in range(1, 30)])
    expected = rec.double().var(-1, unbiased=False).mean() / inp.double().var(-1, unbiased=False).mean()
    assert abs(variance_ratio(tr, layer) - expected.item()) < 1e-6 * expected.item()  # float32 products


def test_variance_ratio_row_subsample_stays_close():
    torch.manual_seed(0)
    layer = LIF(40, 64, tau=2.0, threshold=0.1)
    tr = record(layer, (torch.rand(100, 8, 40) < 0.3).float())
    full = variance_ratio(tr, layer)
    assert variance_ratio(tr, layer, 64 * 10_000) == full
    assert abs(variance_ratio(tr, layer, 64 * 256) / full - 1) < 0.05


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("reset", RESETS)
def test_record_equals_the_layer_and_a_plain_step_loop(cls, reset):
    from spikestab.neurons.functional import step

    torch.manual_seed(0)
    layer = cls(12, 24, tau=3.0, threshold=0.2, reset=reset)
    x = (torch.rand(40, 3, 12) < 0.3).float()
    tr = record(layer, x)
    with torch.no_grad():
        assert torch.equal(tr.z, layer(x)[0])
        dyn, w = layer.dynamics(), layer.recurrent_weight()
        state = layer.initial_state(3, x)
        zs, vs, recs, thrs = [], [], [], []
        for t in range(40):
            recs.append(state.z @ w.t())
            state = step(layer.input_current(x[t]), state, w, dyn)
            zs.append(state.z)
            vs.append(state.v)
            thrs.append((dyn.threshold + (dyn.beta_adapt * state.a if dyn.adaptive else 0.0)).expand_as(state.v))
    assert torch.equal(tr.z, torch.stack(zs))
    assert torch.allclose(tr.v, torch.stack(vs), atol=1e-5)
    assert torch.allclose(tr.recurrent, torch.stack(recs), atol=1e-5)
    assert torch.allclose(tr.thr, torch.stack(thrs), atol=1e-6)


@pytest.mark.parametrize("cls", [LIF, ALIF])
@pytest.mark.parametrize("reset", RESETS)
def test_gradient_growth_equals_a_plain_autograd_loop(cls, reset):
    from spikestab.neurons.functional import step

    torch.manual_seed(0)
    layer = cls(12, 24, tau=3.0, threshold=0.2, reset=reset)
    x = (torch.rand(60, 2, 12) < 0.3).float()
    got = measure_gradient_growth(layer, x)["growth_per_step"]
    dyn, w = layer.dynamics(), layer.recurrent_weight()
    state = layer.initial_state(2, x)
    vs = []
    for t in range(60):
        state = step(layer.input_current(x[t]), state, w, dyn)
        vs.append(state.v)
    u = torch.randn(vs[-1].shape, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((vs[-1] * u).sum(), vs)
    y = torch.stack([g.double().norm() for g in grads]).flip(0).log()
    k = torch.arange(60, dtype=torch.float64)
    slope = (((k - k.mean()) * (y - y.mean())).sum() / ((k - k.mean()) ** 2).sum()).item()
    assert abs(got - slope) < 1e-4


def test_report_is_json_and_table():
    from spikestab.stability import stabilize

    torch.manual_seed(0)
    model = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(16, 16), dropout=0.0))
    report = stabilize(model, (torch.rand(40, 2, 20) < 0.2).float(), ("I", "II", "III", "IV"), jacobian_steps=2)
    text = str(report)
    assert "III" in text and "measured:" in text and "1 LIF-16" in text
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    cond = data["layers"][1]["conditions"]["IV"]
    assert set(cond) >= {"target", "chosen", "feasible", "fallback", "measured"}


# --- condition III: rows without negative input, neurons without leak (regression) ----------------------


@pytest.mark.parametrize("variant", ["c", "mean"])
def test_condition_iii_rows_without_negative_input_get_the_row_bound(variant):
    # all off-diagonal weights equal and positive (what paper condition II's variance-0 fallback builds):
    # the subtractive threshold factor |S-| / (|S-| + threshold) is 0 for every row; the result must fall
    # back to the row bound alpha_j + g_j S+_j = 1, g_j = (1 - alpha_j) / ((n - 1) mu), never 0
    n, mu = 6, 0.2
    w = torch.full((n, n), mu)
    w.fill_diagonal_(0)
    alpha = torch.linspace(0.5, 0.95, n)
    res = condition_iii(w, alpha, torch.ones(n), "subtract", variant=variant)
    expected = (1 - alpha.double()) / ((n - 1) * mu)
    if variant == "mean":
        expected = expected.mean().expand(n)
    assert torch.allclose(res.chosen.double(), expected, rtol=1e-6)
    assert (res.chosen > 0).all() and "threshold factor" in res.fallback
    assert res.extra["no_negative_input"] == n


def test_condition_iii_width_two_mixed_rows_positive():
    # neuron 0: one positive input (S- = 0), neuron 1: one negative input (S+ = 0, any dampening bounds it)
    w = torch.tensor([[0.0, 0.5], [-0.3, 0.0]])
    alpha = torch.tensor([0.8, 0.6])
    res = condition_iii(w, alpha, torch.ones(2), "subtract")
    assert torch.allclose(res.chosen, torch.tensor([0.4, 0.4]))  # (1 - 0.8) / 0.5 for both
    assert res.feasible and res.residual <= 1e-6


@pytest.mark.parametrize("variant", ["c", "bounded"])
def test_condition_iii_neuron_without_leak_is_infeasible_not_zero(variant):
    # alpha = 1 (exp(-1/tau) rounds to 1 in float32 for tau > 2^25): no positive dampening gives gain <= 1
    torch.manual_seed(0)
    n = 8
    w = torch.randn(n, n) * 0.3
    w.fill_diagonal_(0)
    alpha = torch.full((n,), 0.9)
    alpha[3] = 1.0
    res = condition_iii(w, alpha, torch.ones(n), "subtract", variant=variant)
    assert (res.chosen > 0).all() and torch.isfinite(res.chosen).all()
    assert not res.feasible and "without leak" in res.fallback
    if variant == "bounded":  # every row sum: the leak floor 2^-25 misses the bound by at most that much
        assert res.residual <= 2**-25 * 1.001
    else:  # variant c: neuron 3's own row alpha + g_3 S+_3 <= 1 + 2^-25, the other neurons untouched
        s_pos = w.double().clamp_min(0).sum(1)
        assert res.chosen[3].double() * s_pos[3] <= 2**-25 * 1.001
        ref = condition_iii(w, torch.full((n,), 0.9), torch.ones(n), "subtract", variant=variant).chosen
        assert torch.equal(torch.cat([res.chosen[:3], res.chosen[4:]]), torch.cat([ref[:3], ref[4:]]))


def test_condition_iii_rejects_invalid_inputs():
    w = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    with pytest.raises(ValueError, match=r"alpha must be .*\[0, 1\]"):
        condition_iii(w, torch.tensor([0.5, 1.2]), torch.ones(2), "subtract")
    with pytest.raises(ValueError, match=r"threshold must be .*\(0, inf\)"):
        condition_iii(w, torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), "subtract")
    with pytest.raises(ValueError, match="weight_hh must be finite"):
        condition_iii(torch.tensor([[0.0, math.nan], [0.5, 0.0]]), torch.tensor([0.5, 0.5]), torch.ones(2), "subtract")


def test_stabilize_paper_i_ii_iii_with_variance_fallback_sets_positive_dampening():
    # the reported crash: paper condition II's variance is negative on sparse input (mean part too large),
    # so its fallback makes every recurrent weight mu > 0; condition III's variant c then gave 0 for every
    # neuron and the SG rejected it ("dampening must be > 0 ... got min 0")
    from spikestab.stability import stabilize

    torch.manual_seed(0)
    model = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(16,), dropout=0.0))
    x = (torch.rand(30, 2, 20) < 0.01).float()
    report = stabilize(model, x, conditions=("I", "II", "III"), mode="paper", measure=False)
    res = {c.condition: c for c in report.layers[0].conditions}
    assert not res["II"].feasible  # the precondition: the variance fallback ran
    layer = model.stack.layers[0]
    damp = layer.spike_fn.dampening
    assert damp.shape == (16,) and (damp > 0).all()
    w = layer.recurrent_weight().detach().double()
    rows = layer.alpha.detach().double() + w.clamp_min(0) @ damp.double()  # the weights are all equal
    assert rows.max().item() <= 1 + 1e-6
    assert "threshold factor" in res["III"].fallback
