"""Condition IV's official-code solver artefact (spikestab.stability.conditions.official_sharpness_search)
against an independent NumPy reproduction of the code's look-up, np.take(seeds, argmin) without an axis."""

import numpy as np
import pytest
import torch

from spikestab.stability.conditions import condition_iv, official_sharpness_search, paper_voltage_bounds
from spikestab.surrogate import SurrogateGradient


def test_flattened_lookup_matches_numpy_take():
    n, c = 7, 300
    root = torch.linspace(0.5, 1.4, n, dtype=torch.float64)  # a root per neuron inside [0.3, 1.6]
    artefact, intended = official_sharpness_search(lambda x: x - root, n, candidates=c, seed=3, chunk=c)
    seeds = (0.3 + 1.3 * torch.rand(c, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).numpy()
    argmin = np.argmin((seeds - root.numpy()) ** 2, axis=0)
    assert artefact == pytest.approx(np.take(seeds, argmin).mean(), abs=1e-12)
    assert intended == pytest.approx(seeds[argmin, np.arange(n)].mean(), abs=1e-12)
    assert intended == pytest.approx(root.mean().item(), abs=0.02)  # the intended argmin finds the roots


def test_chunking_does_not_change_the_answer():
    root = torch.linspace(0.4, 1.5, 5, dtype=torch.float64)
    whole = official_sharpness_search(lambda x: x - root, 5, candidates=1000, chunk=1000)
    chunked = official_sharpness_search(lambda x: x - root, 5, candidates=1000, chunk=64)
    assert whole[1] == pytest.approx(chunked[1])


def test_paper_mode_iv_reports_the_artefact_next_to_the_argmin():
    """On the paper's default layer (alpha ~ 0, threshold 0.01, Glorot, n = 64) IV has no root: the argmin is
    the bracket's lower end, while the code's look-up returns about the bracket's mean."""
    g = torch.Generator().manual_seed(0)
    n = 64
    w = ((torch.rand(n, n, generator=g) * 2 - 1) * (6 / (2 * n)) ** 0.5).fill_diagonal_(0)
    wi = (torch.rand(n, 100, generator=g) * 2 - 1) * (6 / (n + 100)) ** 0.5
    a, th = torch.full((n,), 4.5e-5), torch.full((n,), 0.01)
    sg = SurrogateGradient("exponential", dampening=torch.tensor(0.2), sharpness=torch.tensor(1.0))
    res = condition_iv(sg, w, a, th, "multiplicative", bounds=paper_voltage_bounds(wi, w, a, th, "multiplicative"))
    assert not res.feasible and res.chosen == pytest.approx(0.3, abs=1e-3)
    assert res.extra["official_code_intended"] == pytest.approx(0.3, abs=1e-3)
    # mean of 64 uniform draws on [0.3, 1.6]: 0.95 +- 0.047 (std of the mean); 4 std either way
    assert abs(res.extra["official_code_sharpness"] - 0.95) < 4 * 1.3 / 12**0.5 / n**0.5
