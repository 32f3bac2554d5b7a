"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022) for spikestab's LIF and CUBA LIF.

The free membrane potential (no reset) of a neuron with N inputs firing as Poisson processes of rate nu
(spikes per time step) is shot noise: with PSP kernel eps_k (the voltage k steps after a unit input),
eps_bar = sum_k eps_k and eps_hat = sum_k eps_k^2, Campbell's theorem gives
    mean  mu_U     = N nu eps_bar mu_w
    var   sigma_U^2 = N nu eps_hat (sigma_w^2 + mu_w^2)      (over time and trials, per neuron, averaged)
for weights of mean mu_w and variance sigma_w^2. Inverting, per connection type c with fan-in N_c:
    mu_w      = mu_U / (N_total nu eps_bar)                   (N_total = N_ff + N_rec, the same mean for all)
    sigma_w^2 = share_c sigma_U^2 / (N_c nu eps_hat) - mu_w^2  (share_ff = alpha, share_rec = 1 - alpha,
                                                                alpha = 1 without recurrence)
with sigma_U = (threshold - mu_U) / xi, or sigma_U given directly. The paper's change (``mu_u="threshold"``,
condition I: the mean membrane at the threshold, firing probability about 1/2) makes (threshold - mu_U)
zero; its code then uses sigma_w^2 = share_c threshold^2 / (N_c nu eps_hat) (threshold 1 in stork), which
is what ``xi`` does here at mu_U = threshold. ``epsilon`` overrides both kernel integrals (eps_bar =
eps_hat = epsilon; the paper's ``nu:1_eps:1`` setting sets nu = epsilon = 1).

Kernels, in time steps, for the equations of ``spikestab.neurons`` (v_t = alpha v_{t-1} + I_t; the CUBA LIF
filters I_t through i_t = alpha_s i_{t-1} + I_t first):
    LIF:   eps_k = alpha^k,  eps_bar = 1/(1 - alpha),  eps_hat = 1/(1 - alpha^2)
    CUBA:  eps_k = sum_j alpha_s^j alpha^(k-j),  eps_bar = 1/((1 - alpha)(1 - alpha_s)),
           eps_hat = (1 + alpha alpha_s) / ((1 - alpha^2)(1 - alpha_s^2)(1 - alpha alpha_s))
Binary spikes with probability nu per step have variance nu (1 - nu), not nu: for them the spread is
sqrt(1 - nu) times the Poisson prediction.

The stability engine has no PSP-kernel integral to share: its input-drive condition (D) sets the threshold
by simulating the layer, not from a kernel, so :func:`psp_integrals` is the one implementation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from ..neurons.cuba import CubaLIF
from ..neurons.layers import SpikingNeurons, spiking_layers
from ..stability import layer_input

__all__ = [
    "FluctuationReport",
    "LayerPlan",
    "fluctuation_init",
    "free_membrane",
    "measure_membrane",
    "psp_integrals",
    "psp_kernel",
    "weight_moments",
]


def psp_kernel(alpha: float, alpha_syn: float | None = None, steps: int | None = None) -> Tensor:
    """The PSP kernel eps_k, k = 0..steps-1 (float64), by running the neuron's linear equations on a unit
    input; ``steps`` defaults to where the kernel has fallen below 1e-12 of its peak."""
    decay = max(alpha, alpha_syn or 0.0)
    if steps is None:
        steps = math.ceil(-30.0 / math.log(decay)) + 50
    i = u = 0.0
    out = []
    for k in range(steps):
        i = (alpha_syn * i if alpha_syn is not None else 0.0) + (1.0 if k == 0 else 0.0)
        u = alpha * u + i
        out.append(u)
    return torch.tensor(out, dtype=torch.float64)


def psp_integrals(alpha: Tensor | float, alpha_syn: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    """(eps_bar, eps_hat) = (sum_k eps_k, sum_k eps_k^2) of the LIF (``alpha_syn`` None) or CUBA LIF kernel,
    per neuron when the decays are per-neuron tensors (float64, closed forms of the module doc)."""
    a = torch.as_tensor(alpha, dtype=torch.float64)
    if not ((a > 0) & (a < 1)).all():
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if alpha_syn is None:
        return 1.0 / (1.0 - a), 1.0 / (1.0 - a * a)
    s = torch.as_tensor(alpha_syn, dtype=torch.float64)
    if not ((s > 0) & (s < 1)).all():
        raise ValueError(f"alpha_syn must be in (0, 1), got {alpha_syn!r}")
    return 1.0 / ((1.0 - a) * (1.0 - s)), (1.0 + a * s) / ((1.0 - a * a) * (1.0 - s * s) * (1.0 - a * s))


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def weight_moments(
    n_ff: int,
    n_rec: int,
    *,
    mu_u: Tensor | float,
    sigma_u: Tensor | float | None,
    nu: float,
    eps_bar: Tensor | float,
    eps_hat: Tensor | float,
    alpha: float = 0.9,
    threshold: Tensor | float = 1.0,
) -> dict[str, tuple[Tensor, Tensor]]:
    """{"ff": (mu_w, sigma_w), "rec": (...)} per post-synaptic neuron (float64) for a target membrane mean
    ``mu_u`` and spread ``sigma_u``. ``sigma_u=None`` is the paper's mu_U = threshold case (sigma_w^2 =
    share threshold^2 / (N nu eps_hat)). Raises ValueError naming the quantity when the input rate, the
    fan-ins or the target cannot give real weights (sigma_w^2 < 0: the spread is too small for the mean)."""
    nu = _positive("nu (input rate, spikes per step)", nu)
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha <= 1.0):
        raise ValueError(f"alpha (the feed-forward share of the membrane variance) must be in (0, 1], got {alpha!r}")
    if n_ff < 1 or n_rec < 0:
        raise ValueError(f"fan-ins must be n_ff >= 1 and n_rec >= 0, got {n_ff}, {n_rec}")
    ebar, ehat = torch.as_tensor(eps_bar, dtype=torch.float64), torch.as_tensor(eps_hat, dtype=torch.float64)
    if not (torch.isfinite(ebar).all() and torch.isfinite(ehat).all() and (ebar > 0).all() and (ehat > 0).all()):
        raise ValueError(
            f"eps_bar and eps_hat (PSP kernel integrals) must be finite and > 0, got {eps_bar!r}, {eps_hat!r}"
        )
    mu = torch.as_tensor(mu_u, dtype=torch.float64)
    if not torch.isfinite(mu).all():
        raise ValueError(f"mu_u must be finite, got {mu_u!r}")
    total = n_ff + n_rec
    mu_w = mu / (total * nu * ebar)
    share = {"ff": alpha if n_rec else 1.0, "rec": 1.0 - alpha}
    out = {}
    for kind, n in (("ff", n_ff), ("rec", n_rec)):
        if n == 0:
            continue
        if sigma_u is None:
            var = share[kind] * torch.as_tensor(threshold, dtype=torch.float64) ** 2 / (n * nu * ehat)
        else:
            var = share[kind] * torch.as_tensor(sigma_u, dtype=torch.float64) ** 2 / (n * nu * ehat) - mu_w**2
        if share[kind] > 0 and not (var > 0).all():
            need = torch.sqrt(mu_w**2 * n * nu * ehat / share[kind]).max().item()
            raise ValueError(
                f"infeasible variance: the {kind} weight variance sigma_w^2 = share sigma_U^2 / "
                f"(N nu eps_hat) "
                f"- mu_w^2 is {var.min().item():.3g} < 0 for mu_U = {mu.max().item():.3g}, nu = {nu:g}; "
                f"sigma_U must exceed {need:.3g} (or lower |mu_U|)"
            )
        out[kind] = (mu_w.expand_as(var).clone(), var.clamp_min(0.0).sqrt())
    return out


@dataclass
class LayerPlan:
    """What the initialisation chose for one layer and what it promises (membrane mean and spread)."""

    index: int
    neuron: str  # "lif" or "cuba"
    n_ff: int
    n_rec: int
    eps_bar: float
    eps_hat: float
    mu_w_ff: float
    sigma_w_ff: float
    mu_w_rec: float | None
    sigma_w_rec: float | None
    target_mu_u: float
    target_sigma_u: float  # promised spread (from the chosen moments; in the paper case not a free target)
    paper_case: bool
    measured: dict = field(default_factory=dict)  # filled by measure_membrane


@dataclass
class FluctuationReport:
    """One :class:`LayerPlan` per spiking layer plus the settings; ``str`` gives a table."""

    nu: float
    alpha: float
    epsilon: float | None
    layers: list[LayerPlan]

    def to_dict(self) -> dict:
        return {"nu": self.nu, "alpha": self.alpha, "epsilon": self.epsilon, "layers": [asdict(p) for p in self.layers]}

    def __str__(self) -> str:
        rows = [
            f"fluctuation-driven init: nu = {self.nu:g} spikes/step, alpha = {self.alpha:g}"
            + (f", epsilon = {self.epsilon:g}" if self.epsilon is not None else ""),
            "layer neuron  n_ff n_rec  mu_w_ff  sigma_w_ff  target mu_U  sigma_U | measured mu_U  sigma_U  rate",
        ]
        for p in self.layers:
            m = p.measured
            meas = f"{m['mu_u']:13.3g}  {m['sigma_u']:7.3g}  {m['rate']:.3f}" if m else "  (not measured)"
            rows.append(
                f"{p.index:5d} {p.neuron:6s} {p.n_ff:5d} {p.n_rec:5d} {p.mu_w_ff:8.3g} {p.sigma_w_ff:11.3g} "
                f"{p.target_mu_u:12.3g} {p.target_sigma_u:8.3g} | {meas}"
            )
        return "\n".join(rows)


def _decays(layer: SpikingNeurons) -> tuple[Tensor, Tensor | None]:
    syn = layer.alpha_syn.detach() if isinstance(layer, CubaLIF) else None
    return layer.alpha.detach(), syn


def _rec_fan_in(layer: SpikingNeurons) -> int:
    mask = layer.recurrent_mask
    if layer.weight_hh is None or mask is None:
        return 0
    return int(mask.sum(1).max().item())


def _normal(weight: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal float64 draws of ``weight``'s shape on ``weight``'s device, from ``generator`` on its
    own device (the global CPU generator when None, so that a seed gives the same weights on every device)."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(weight.shape, generator=generator, dtype=torch.float64, device=where).to(weight.device)


@torch.no_grad()
def fluctuation_init(
    model: nn.Module,
    nu: float,
    mu_u: float | str = 0.0,
    *,
    xi: float | None = None,
    sigma_u: float | None = None,
    alpha: float = 0.9,
    epsilon: float | None = None,
    match_moments: bool = False,
    generator: torch.Generator | None = None,
) -> FluctuationReport:
    """Draw every spiking layer's weights (W_ih, and W_hh when recurrent) from normals whose moments put the
    free membrane potential at mean ``mu_u`` (a number, or ``"threshold"``: each layer's threshold, the
    paper's condition I) and spread ``sigma_u``, or (threshold - mu_U) / ``xi`` (give one; neither: sigma_u =
    1, stork's centred default). ``nu`` is the presynaptic rate (spikes per step) assumed for every layer.
    Layer by layer; returns the plans (call :func:`measure_membrane` to measure what they promised).

    The draw is stork's, i.i.d. normal: the layer's mean membrane then misses mu_U by a sampling error of
    about sigma_U sqrt(nu eps_bar^2 / eps_hat / H) for H neurons. ``match_moments=True`` shifts and scales
    every neuron's incoming weights to exactly the chosen mean and std, so that each neuron (not only the
    population) gets the promised mean and spread.

    Example:
        >>> from spikestab.neurons import LIF
        >>> layer = LIF(200, 50, recurrent=False, tau=10.0)
        >>> rep = fluctuation_init(layer, nu=0.05, mu_u=0.0, sigma_u=1.0)
        >>> round(rep.layers[0].target_sigma_u, 6)
        1.0
    """
    nu, epsilon = _check_arguments(nu, mu_u, xi, sigma_u, epsilon)
    layers = spiking_layers(model)
    if not layers:
        raise ValueError("model must contain at least one spikestab spiking layer (LIF, ALIF, CubaLIF)")
    plans = []
    for index, layer in enumerate(layers):
        thr, mu, spread, paper_case = _target(layer, index, mu_u, xi, sigma_u)
        a, s = _decays(layer)
        ebar, ehat = (torch.full_like(thr, epsilon),) * 2 if epsilon is not None else psp_integrals(a, s)
        n_ff, n_rec = layer.input_size, _rec_fan_in(layer)
        try:
            moments = weight_moments(
                n_ff, n_rec, mu_u=mu, sigma_u=spread, nu=nu, eps_bar=ebar, eps_hat=ehat, alpha=alpha, threshold=thr
            )
        except ValueError as err:
            raise ValueError(f"layer {index}: {err}") from None
        _draw(layer, moments, generator, match_moments)
        promised = cast(
            Tensor,
            sum(
                n * nu * ehat * (moments[k][1] ** 2 + moments[k][0] ** 2)
                for k, n in (("ff", n_ff), ("rec", n_rec))
                if k in moments
            ),
        ).sqrt()
        rec = moments.get("rec")
        plans.append(
            LayerPlan(
                index,
                "cuba" if isinstance(layer, CubaLIF) else "lif",
                n_ff,
                n_rec,
                float(ebar.mean()),
                float(ehat.mean()),
                float(moments["ff"][0].mean()),
                float(moments["ff"][1].mean()),
                None if rec is None else float(rec[0].mean()),
                None if rec is None else float(rec[1].mean()),
                float(mu.mean()),
                float(promised.mean()),
                paper_case,
            )
        )
    return FluctuationReport(nu, alpha, epsilon, plans)


def _check_arguments(
    nu: float, mu_u: float | str, xi: float | None, sigma_u: float | None, epsilon: float | None
) -> tuple[float, float | None]:
    """``fluctuation_init``'s arguments checked (ValueError naming the first bad one): (nu, epsilon)."""
    nu = _positive("nu (input rate, spikes per step)", nu)
    if epsilon is not None:
        epsilon = _positive("epsilon (the PSP-integral override)", epsilon)
    if xi is not None and sigma_u is not None:
        raise ValueError(f"give xi or sigma_u, not both (got xi={xi!r}, sigma_u={sigma_u!r})")
    if xi is not None:
        _positive("xi (distance to threshold in standard deviations)", xi)
    if sigma_u is not None:
        _positive("sigma_u (target membrane standard deviation)", sigma_u)
    if not (mu_u == "threshold" or (isinstance(mu_u, (int, float)) and math.isfinite(mu_u))):
        raise ValueError(f"mu_u must be a finite number or 'threshold', got {mu_u!r}")
    return nu, epsilon


def _target(
    layer: SpikingNeurons, index: int, mu_u: float | str, xi: float | None, sigma_u: float | None
) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    """Layer ``index``'s threshold, target membrane mean and spread (None in the paper's case: mu_U at the
    threshold with xi given), and whether it is the paper's case."""
    thr = layer.threshold.detach().double()
    mu = thr if mu_u == "threshold" else torch.full_like(thr, float(mu_u))
    if xi is None:
        return thr, mu, torch.full_like(thr, 1.0 if sigma_u is None else float(sigma_u)), False
    if (mu > thr).any():
        raise ValueError(
            f"mu_u must be at most the threshold ({thr.min().item():g}) when xi is given (xi = "
            f"(threshold - mu_U) / sigma_U > 0), got mu_u = {mu.max().item():g} in layer {index}"
        )
    paper_case = bool((mu == thr).all())
    if not paper_case and (mu == thr).any():
        raise ValueError(f"mu_u equals the threshold for some neurons of layer {index} only; use one threshold")
    return thr, mu, None if paper_case else (thr - mu) / xi, paper_case


def _draw(layer: SpikingNeurons, moments: dict, generator: torch.Generator | None, match_moments: bool) -> None:
    """Draw the layer's W_ih (and W_hh) from normals of ``moments`` (per neuron: mean, std), in place;
    ``match_moments``: each neuron's incoming weights shifted and scaled to exactly those moments."""
    for kind, weight, connections in (("ff", layer.weight_ih, None), ("rec", layer.weight_hh, layer.recurrent_mask)):
        if kind not in moments:
            continue
        if weight is None:
            raise ValueError(f"moments for recurrent weights given, but this {type(layer).__name__} has none")
        m, sd = moments[kind]
        noise = _normal(weight, generator)
        if match_moments:  # connections None: all of them
            mask = torch.ones_like(noise) if connections is None else connections.double()
            n = mask.sum(1, keepdim=True)
            noise = (noise - (noise * mask).sum(1, keepdim=True) / n) * mask
            noise = noise / ((noise**2).sum(1, keepdim=True) / n).sqrt()
        weight.copy_((m[:, None] + sd[:, None] * noise).to(weight.dtype))


def free_membrane(layer: SpikingNeurons, x: Tensor, presynaptic: Tensor | None = None) -> Tensor:
    """The membrane potential without reset [T, B, H] that ``layer``'s PSP kernel gives for input x [T, B, I]
    and, for a recurrent layer, presynaptic recurrent spikes ``presynaptic`` [T, B, H] (entry t acts at step
    t + 1, like z_t; None: the layer's own spikes on x)."""
    with torch.no_grad():
        current = layer.input_current(x.to(layer.weight_ih.dtype))
        w_rec = layer.recurrent_weight()
        if w_rec is not None:
            z = layer(x)[0] if presynaptic is None else presynaptic.to(current.dtype)
            z_prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
            current = current + z_prev @ w_rec.t()
        a, s = _decays(layer)
        i = torch.zeros_like(current[0])
        u = torch.zeros_like(current[0])
        out = []
        for t in range(current.shape[0]):
            i = (s * i if s is not None else 0.0) + current[t]
            u = a * u + i
            out.append(u)
        return torch.stack(out)


def membrane_stats(u: Tensor, burn_in: int) -> dict[str, float]:
    """Mean over (time after ``burn_in``, batch, neurons), and the spread the theory describes: the square
    root of the per-neuron variance over time and batch, averaged over neurons; ``across`` is the std of the
    per-neuron means (the part of the total spread the theory leaves out)."""
    u = u[burn_in:].double().reshape(-1, u.shape[-1])
    return {
        "mu_u": float(u.mean()),
        "sigma_u": float(u.var(0, unbiased=False).mean().sqrt()),
        "across": float(u.mean(0).std()),
    }


def burn_in_steps(layer: SpikingNeurons, length: int) -> int:
    """Steps the zero start needs to fade (5 membrane plus synaptic time constants), at most half of ``length``."""
    tau = float(layer.tau.detach().max()) + (float(layer.tau_syn.detach().max()) if isinstance(layer, CubaLIF) else 0.0)
    return min(math.ceil(5.0 * tau), length // 2)


def measure_membrane(model: nn.Module, batch: Tensor, report: FluctuationReport) -> FluctuationReport:
    """Measure, layer by layer on ``batch`` (the model's input, eval mode), the free membrane mean and spread
    (:func:`membrane_stats` after :func:`burn_in_steps`), the layer's input rate and its firing rate, and
    store them in ``report`` (returned)."""
    layers = spiking_layers(model)
    if len(layers) != len(report.layers):
        raise ValueError(f"report has {len(report.layers)} layers but the model has {len(layers)} spiking layers")
    for layer, plan in zip(layers, report.layers):
        x = layer_input(model, batch, plan.index)
        with torch.no_grad():
            z = layer(x)[0]
        u = free_membrane(layer, x, z if layer.weight_hh is not None else None)
        stats = membrane_stats(u, burn_in_steps(layer, x.shape[0]))
        plan.measured = {**stats, "input_rate": float(x.float().mean()), "rate": float(z.mean())}
    return report
