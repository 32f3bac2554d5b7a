"""Fluctuation-driven initialisation: the PSP integrals against the simulated kernel, the promised membrane
mean and spread measured on Poisson input of rate nu for LIF and CUBA LIF (feed-forward and recurrent), the
paper's mu_U = threshold case, the epsilon override, and bad input refused by name."""

import math

import pytest
import torch

from spikestab.init.fluctuation import fluctuation_init, measure_membrane, psp_integrals, psp_kernel, weight_moments
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons import LIF
from spikestab.neurons.cuba import CubaLIF

NU = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("alpha,alpha_syn", [(0.9, None), (0.9, 0.8), (0.95, 0.95), (0.5, 0.3)])
def test_psp_integrals_match_simulated_kernel(alpha, alpha_syn):
    k = psp_kernel(alpha, alpha_syn)
    ebar, ehat = psp_integrals(alpha, alpha_syn)
    assert math.isclose(float(ebar), float(k.sum()), rel_tol=1e-9)
    assert math.isclose(float(ehat), float((k**2).sum()), rel_tol=1e-9)


def hand_free_membrane(x, r, w_ih, w_hh, alpha, alpha_syn):
    """u_t = alpha u_{t-1} + i_t, i_t = alpha_syn i_{t-1} + W x_t + W_hh r_{t-1} (i = input for LIF)."""
    u = torch.zeros(x.shape[1], w_ih.shape[0], dtype=torch.float64)
    i = torch.zeros_like(u)
    out = []
    for t in range(x.shape[0]):
        cur = x[t].double() @ w_ih.double().t()
        if w_hh is not None and t > 0:
            cur = cur + r[t - 1].double() @ w_hh.double().t()
        i = (alpha_syn * i if alpha_syn is not None else 0.0) + cur
        u = alpha * u + i
        out.append(u)
    return torch.stack(out)


def stats(u, burn):
    u = u[burn:].reshape(-1, u.shape[-1])
    return float(u.mean()), float(u.var(0, unbiased=False).mean().sqrt())


@pytest.mark.parametrize("cls,recurrent", [(LIF, False), (LIF, True), (CubaLIF, False), (CubaLIF, True)])
@pytest.mark.parametrize("mu_u,spread", [(0.5, {"sigma_u": 1.0}), ("threshold", {"xi": 1.0}), (0.2, {"xi": 2.0})])
def test_hits_target_mean_and_std_on_poisson_input(cls, recurrent, mu_u, spread):
    torch.manual_seed(0)
    n_in, h, T, B = 300, 100, 700, 6
    layer = cls(n_in, h, recurrent=recurrent, tau=10.0, threshold=1.0, bias=False)
    gen = torch.Generator().manual_seed(1)
    rep = fluctuation_init(layer, nu=NU, mu_u=mu_u, generator=gen, match_moments=True, **spread)
    plan = rep.layers[0]
    target_mu = 1.0 if mu_u == "threshold" else mu_u
    if "sigma_u" in spread:
        assert math.isclose(plan.target_sigma_u, 1.0, rel_tol=1e-9)
    elif mu_u != "threshold":
        assert math.isclose(plan.target_sigma_u, (1.0 - mu_u) / spread["xi"], rel_tol=1e-9)
    assert plan.paper_case == (mu_u == "threshold")
    x = torch.poisson(torch.full((T, B, n_in), NU))
    r = torch.poisson(torch.full((T, B, h), NU))  # presynaptic recurrent activity at the assumed rate
    alpha_syn = layer.alpha_syn.detach().double() if cls is CubaLIF else None
    u = hand_free_membrane(
        x,
        r,
        layer.weight_ih.detach(),
        layer.recurrent_weight().detach() if recurrent else None,
        layer.alpha.detach().double(),
        alpha_syn,
    )
    mu, sd = stats(u, 100)
    assert abs(mu - target_mu) <= 0.1 * abs(target_mu), (mu, target_mu)
    assert abs(sd - plan.target_sigma_u) <= 0.1 * plan.target_sigma_u, (sd, plan.target_sigma_u)


@pytest.mark.parametrize("cls", [LIF, CubaLIF])
def test_plain_draw_hits_target_on_a_wide_layer(cls):
    """stork's i.i.d. draw: the population mean carries a sampling error ~ 1/sqrt(H), small for wide layers."""
    torch.manual_seed(3)
    n_in, h, T, B = 300, 2000, 500, 2
    layer = cls(n_in, h, recurrent=False, tau=10.0)
    plan = fluctuation_init(layer, nu=NU, mu_u=0.5, sigma_u=1.0, generator=torch.Generator().manual_seed(4)).layers[0]
    x = torch.poisson(torch.full((T, B, n_in), NU))
    alpha_syn = layer.alpha_syn.detach().double() if cls is CubaLIF else None
    mu, sd = stats(
        hand_free_membrane(x, None, layer.weight_ih.detach(), None, layer.alpha.detach().double(), alpha_syn), 100
    )
    assert abs(mu - 0.5) <= 0.05 and abs(sd - plan.target_sigma_u) <= 0.1


def test_report_measures_the_promise_on_a_model():
    torch.manual_seed(2)
    model = SNNClassifier(SNNConfig(200, 5, hidden_sizes=(64,), net="cuba", recurrent=False, tau=10.0, dropout=0.0))
    rep = fluctuation_init(
        model, nu=NU, mu_u=0.3, sigma_u=0.5, match_moments=True, generator=torch.Generator().manual_seed(0)
    )
    rep = measure_membrane(model, torch.poisson(torch.full((500, 4, 200), NU)), rep)
    m = rep.layers[0].measured
    assert abs(m["mu_u"] - 0.3) < 0.03 and abs(m["sigma_u"] - 0.5) < 0.05 and abs(m["input_rate"] - NU) < 0.005
    assert "measured mu_U" in str(rep) and rep.to_dict()["layers"][0]["measured"]["rate"] == m["rate"]


def test_epsilon_override_and_recurrent_share():
    mom = weight_moments(100, 50, mu_u=1.0, sigma_u=None, nu=1.0, eps_bar=1.0, eps_hat=1.0, alpha=0.9)
    assert math.isclose(float(mom["ff"][0]), 1.0 / 150) and math.isclose(float(mom["ff"][1]), math.sqrt(0.9 / 100))
    assert math.isclose(float(mom["rec"][1]), math.sqrt(0.1 / 50))
    layer = LIF(100, 51, recurrent=True, tau=10.0)
    rep = fluctuation_init(layer, nu=1.0, mu_u="threshold", xi=1.0, epsilon=1.0)
    p = rep.layers[0]
    assert p.eps_bar == p.eps_hat == 1.0 and p.n_rec == 50
    assert math.isclose(p.sigma_w_rec, math.sqrt(0.1 / 50), rel_tol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"nu": 0.0}, "nu"),
        ({"nu": -1.0}, "nu"),
        ({"nu": 0.05, "mu_u": 1.5, "xi": 1.0}, "mu_u must be at most"),
        ({"nu": 0.05, "mu_u": 5.0, "sigma_u": 0.01}, "infeasible variance"),
        ({"nu": 0.05, "mu_u": float("nan")}, "mu_u"),
        ({"nu": 0.05, "xi": 1.0, "sigma_u": 1.0}, "not both"),
        ({"nu": 0.05, "alpha": 0.0}, "alpha"),
        ({"nu": 0.05, "epsilon": -1.0}, "epsilon"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    layer = LIF(50, 20, tau=10.0)
    before = layer.weight_ih.detach().clone()
    with pytest.raises(ValueError, match=match):
        fluctuation_init(layer, **kwargs)
    assert torch.equal(layer.weight_ih, before)  # nothing drawn, never a NaN weight
