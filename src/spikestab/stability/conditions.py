"""Stability conditions I-IV on plain tensors (docs/theory.md, "The conditions").

Orientation: weights are in ``torch.nn.RNN`` layout, ``weight_hh[j, i]`` from neuron i to neuron j, so the
sums over the inputs of a post-synaptic neuron j run over the row ``weight_hh[j, :]`` (some texts write the
transposed layout). ``weight_hh`` is the effective matrix (diagonal already masked); ``fan_in`` is the
number of recurrent inputs per neuron (n - 1 with the masked diagonal).

Each condition returns a :class:`ConditionResult` with the chosen value(s), a feasibility flag and the
fallback used when there is no solution. Two modes:

- ``paper``: the official code's formulas, with its known bugs not reproduced (uniform voltage between
  worst-case bounds for condition IV, variant c for condition III, the derived multiplicative_all mean
  for condition I, the exactly realised variance for condition II).
- ``measured``: the same targets with expectations over the voltages and spikes recorded on a data batch
  (:class:`TransitionTerms` for condition IV, recorded spikes and input-current variance for condition
  II, measured input-current mean for the first guess of condition I, which ``stabilize`` then corrects by
  a root find on the simulated rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ..dynamics import check_reset
from ..surrogate import SurrogateGradient
from .solvers import scan_root

__all__ = [
    "III_VARIANTS",
    "SOLVE_FOR",
    "ConditionResult",
    "Recording",
    "TransitionTerms",
    "check_rate",
    "finite_or_none",
    "condition_i",
    "condition_ii",
    "condition_iii",
    "condition_iv",
    "paper_voltage_bounds",
    "official_sharpness_search",
    "split_recurrent",
    "compose_recurrent",
]

PAPER_SHARPNESS_BRACKET = (0.3, 1.6)  # the official code's search interval
OFFICIAL_CANDIDATES = 100_000  # the official code's random-search candidates per neuron (its solver "b")
MAX_ROWS = 512  # recorded samples (steps x batch) used by the measured condition II
TAIL_BRACKET = (1.01, 100.0)
SOLVE_FOR = ("sharpness", "tail")  # what condition IV solves for
III_VARIANTS = ("c", "mean", "bounded")  # condition III's dampening variants
_F32 = torch.finfo(torch.float32)


@dataclass
class ConditionResult:
    """What one condition chose for one layer and whether it could meet its target."""

    condition: str  # "I", "II", "III" or "IV"
    quantity: str  # the targeted quantity
    target: float
    parameter: str  # what was chosen
    chosen: Tensor | float  # the value (per neuron or scalar)
    feasible: bool
    fallback: str | None = None  # what was used instead when infeasible
    residual: float | None = None  # the theory's miss at the chosen value (predicted quantity - target)
    measured: float | None = None  # the targeted quantity measured on the built network
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def chosen_mean(self) -> float:
        """The chosen value, or its mean over neurons."""
        return float(torch.as_tensor(self.chosen, dtype=torch.float64, device="cpu").mean())  # a host number

    def to_dict(self) -> dict:
        c = torch.as_tensor(self.chosen, dtype=torch.float64, device="cpu")  # the report's numbers: on the host
        out = {
            "condition": self.condition,
            "quantity": self.quantity,
            "target": finite_or_none(self.target),
            "parameter": self.parameter,
            "chosen": finite_or_none(self.chosen_mean),
            "feasible": bool(self.feasible),
            "fallback": self.fallback,
            "residual": finite_or_none(self.residual),
            "measured": finite_or_none(self.measured),
            "note": self.note,
        }
        if c.numel() > 1:
            out.update(chosen_std=float(c.std()), chosen_min=float(c.min()), chosen_max=float(c.max()))
        out.update({k: finite_or_none(v) if isinstance(v, float) else v for k, v in self.extra.items()})
        return out


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe float (None for nan and infinities)."""
    return None if x is None or not math.isfinite(x) else float(x)


def check_rate(rate: float, name: str = "rate") -> float:
    """A firing rate target: a number in the open interval (0, 1); ValueError naming ``name`` otherwise."""
    if not (isinstance(rate, (int, float)) and 0.0 < rate < 1.0):
        raise ValueError(f"{name} must be in the open interval (0, 1), got {rate!r}")
    return rate


def _fan_in(weight_hh: Tensor, fan_in: int | None) -> int:
    return weight_hh.shape[0] - 1 if fan_in is None else int(fan_in)


# --- condition I --------------------------------------------------------------------------------------


def condition_i(
    weight_hh: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    reset: str,
    *,
    rate: float = 0.5,
    input_mean: Tensor | None = None,
    beta_adapt: Tensor | None = None,
    fan_in: int | None = None,
) -> ConditionResult:
    """Recurrent-weight mean per post-synaptic neuron that puts the stationary mean voltage at the
    threshold, so that a neuron fires with probability ``rate`` (1/2 in the paper).

    With p = rate, k = fan_in, A = threshold (+ beta_adapt * p for ALIF) and m = mean input current
    (0 in ``paper`` mode, the measured per-neuron mean of W_ih x + b in ``measured`` mode), the stationary
    mean of the update gives
        subtract:            mu = (A (1 - alpha + p) - m) / (k p)         (p = 1/2: (3 - 2 alpha) A / k)
        multiplicative:      mu = (A (1 - alpha (1 - p)) - m) / (k p)     (p = 1/2: (2 - alpha) A / k)
        multiplicative_all:  mu = (A (1 / (1 - p) - alpha) - m) / (k p)   (p = 1/2: 2 (2 - alpha) A / k,
                             the derived value, not the official code's 2 (1 - alpha) A / k)
        none:                mu = (A (1 - alpha) - m) / (k p)
    Always feasible. ``chosen`` is the per-neuron mean mu [H] (row means of ``weight_hh``).

    Examples:
        >>> w = torch.zeros(5, 5); a = torch.zeros(5); th = torch.ones(5)
        >>> condition_i(w, a, th, "subtract").chosen   # (3 - 0) * 1 / 4
        tensor([0.7500, 0.7500, 0.7500, 0.7500, 0.7500])
    """
    check_reset(reset)
    check_rate(rate)
    k = _fan_in(weight_hh, fan_in)
    if k < 1:
        raise ValueError(f"fan_in must be >= 1 for condition I, got {k}")
    p = rate
    alpha = alpha.double()
    thr = threshold.double() + (0.0 if beta_adapt is None else beta_adapt.double() * p)
    m = 0.0 if input_mean is None else input_mean.double()
    factor = {
        "subtract": 1.0 - alpha + p,
        "multiplicative": 1.0 - alpha * (1.0 - p),
        "multiplicative_all": 1.0 / (1.0 - p) - alpha,
        "none": 1.0 - alpha,
    }[reset]
    mu = (thr * factor - m) / (k * p)
    return ConditionResult("I", "initial firing rate", rate, "recurrent weight mean", mu.float(), True)


# --- condition II -------------------------------------------------------------------------------------


def split_recurrent(weight_hh: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, float]:
    """Mean mu (the global mean over the unmasked entries, repeated per row) [H], standardised residual
    pattern P [H, H] (zero on masked entries, unit variance over the unmasked ones) and the residual
    std of ``weight_hh``, so W = mu + std * P on the mask.

    The mean is global, not per row: the random row means of a freshly initialised matrix are part of
    the weights' spread (they reach every neuron through ~n/2 active inputs), so condition II scales
    them with the rest of the residual, while condition I replaces the mean."""
    m = mask.to(weight_hh.dtype)
    n = m.sum().clamp_min(1.0)
    mean = (weight_hh * m).sum() / n
    resid = (weight_hh - mean) * m
    std = float(((resid**2).sum() / n).sqrt())
    pattern = resid / std if std > 0 else resid
    return mean.expand(weight_hh.shape[0]).clone(), pattern, std


def compose_recurrent(mean: Tensor, std: float, pattern: Tensor, mask: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`split_recurrent`: (mean_j + std * P) on the mask, ``like``'s entries elsewhere."""
    m = mask.to(like.dtype)
    return (mean.to(like.dtype)[:, None] + std * pattern.to(like.dtype)) * m + like * (1.0 - m)


def condition_ii(
    weight_ih: Tensor,
    weight_hh: Tensor,
    *,
    mean: Tensor | float,
    input_moment2: float | None = None,
    spikes: Tensor | None = None,
    pattern: Tensor | None = None,
    input_var: float | None = None,
    mask: Tensor | None = None,
    fan_in: int | None = None,
) -> ConditionResult:
    """Recurrent-weight variance that makes the recurrent current as variable as the input current.

    ``paper`` mode (``input_moment2`` = E[x^2] of the layer input given): the independence derivation
        Var(W_hh z) = k (sigma^2 / 2 + mu^2 / 4) = n_in Var(W_ih) E[x^2] = Var(W_ih x)
        =>  sigma^2 = 2 n_in Var(W_ih) E[x^2] / k - mu^2 / 2
    with the factor 2 the official code drops, realised exactly (no fan-in rescaling on top).

    ``measured`` mode (``spikes`` [N, H] = the recorded z_{t-1}, ``pattern`` P [H, H] from
    :func:`split_recurrent`, ``input_var`` = the measured Var_j(W_ih x)_j averaged over samples, ``mask``):
    with W = mu + sigma P, the across-neuron variance of z W^T averaged over the recorded samples (see
    ``measure.variance_ratio``; at most 512 evenly strided samples) is a quadratic in sigma, solved
    exactly for those spikes.

    ``chosen`` is sigma^2. A negative sigma^2 (the mean part alone already exceeds the input variance) is
    infeasible: the fallback is the nearest feasible value (paper: 0; measured: the sigma >= 0 minimising
    the mismatch), never NaN.

    Examples:
        >>> w_ih = torch.full((4, 3), 0.5); w_hh = torch.zeros(4, 4)
        >>> condition_ii(w_ih, w_hh, mean=0.0, input_moment2=1.0).chosen   # Var(w_ih) = 0
        0.0
    """
    mu = torch.as_tensor(mean, dtype=torch.float64)
    if spikes is None:
        if input_moment2 is None:
            raise ValueError(
                "condition_ii needs input_moment2 (paper mode) or spikes, pattern and input_var (measured mode)"
            )
        return _paper_ii(weight_ih, _fan_in(weight_hh, fan_in), mu, float(input_moment2))
    if pattern is None or input_var is None or mask is None:
        raise ValueError("measured condition_ii needs spikes, pattern, input_var and mask")
    va, vb, cab = _current_moments(spikes, pattern, mask, mu)
    return _measured_ii(va, vb, cab, float(input_var))


_II = ("II", "recurrent/input current variance ratio", 1.0, "recurrent weight variance")


def _paper_ii(weight_ih: Tensor, k: int, mu: Tensor, input_moment2: float) -> ConditionResult:
    """The independence derivation's sigma^2 (0, infeasible, when it is negative)."""
    var_ih = weight_ih.double().var(unbiased=False).item()
    sigma2 = 2.0 * weight_ih.shape[1] * var_ih * input_moment2 / k - (mu**2).mean().item() / 2.0
    if sigma2 >= 0:
        return ConditionResult(*_II, sigma2, True)
    return ConditionResult(
        *_II,
        0.0,
        False,
        fallback="variance 0 (the formula gave a negative variance)",
        residual=None,
        extra={"formula_value": sigma2},
    )


def _current_moments(spikes: Tensor, pattern: Tensor, mask: Tensor, mu: Tensor) -> tuple[float, float, float]:
    """With W = mu + sigma P, the across-neuron variance of z W^T is va + 2 sigma cab + sigma^2 vb over
    the recorded spikes z (at most MAX_ROWS evenly strided samples): (va, vb, cab)."""
    z = spikes.reshape(-1, spikes.shape[-1])
    if z.shape[0] > MAX_ROWS:  # a deterministic, evenly strided subsample keeps the H x H product cheap
        z = z[:: -(-z.shape[0] // MAX_ROWS)]
    m = mask.to(z.dtype)
    row_mu = mu.reshape(-1).expand(m.shape[0]).to(z.dtype)
    # mean part: mu_j times the number of active unmasked inputs of j (no H x H product for the usual
    # masked diagonal)
    if torch.equal(m, 1 - torch.eye(m.shape[0], dtype=m.dtype, device=m.device)):
        presyn = z.sum(1, keepdim=True) - z
    else:
        presyn = z @ m.t()
    a_cur = row_mu * presyn
    b_cur = z @ pattern.to(z.dtype).t()
    a_c = (a_cur - a_cur.mean(-1, keepdim=True)).double()
    b_c = (b_cur - b_cur.mean(-1, keepdim=True)).double()
    return (a_c**2).mean().item(), (b_c**2).mean().item(), (a_c * b_c).mean().item()


def _measured_ii(va: float, vb: float, cab: float, target: float) -> ConditionResult:
    """The sigma >= 0 solving va + 2 sigma cab + sigma^2 vb = target exactly, or the nearest one."""
    if vb <= 0:
        return ConditionResult(
            *_II, 0.0, False, fallback="variance 0 (the recorded spikes carry no recurrent variance)"
        )
    disc = cab * cab - vb * (va - target)
    if disc >= 0 and (-cab + math.sqrt(disc)) >= 0:
        sigma = (-cab + math.sqrt(disc)) / vb
        return ConditionResult(*_II, sigma**2, True)
    sigma = max(0.0, -cab / vb)
    pred = va + 2 * sigma * cab + sigma**2 * vb
    return ConditionResult(
        *_II, sigma**2, False, fallback="sigma >= 0 minimising the variance mismatch", residual=pred / target - 1.0
    )


# --- condition III ------------------------------------------------------------------------------------


def condition_iii(
    weight_hh: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    reset: str,
    *,
    variant: str = "c",
) -> ConditionResult:
    """Per-neuron dampening bounding the worst-case transition derivative (docs/theory.md, "Condition III").

    With S+_j = sum_i max(W[j, i], 0), S-_j = -sum_i max(-W[j, i], 0) and th_eff = threshold for the
    subtractive reset (0 otherwise):
        ``"c"`` (the official code's default):  g_j = (1 - alpha_j) / S+_j * |S-_j| / (|S-_j| + th_eff_j)
        ``"mean"``:    the scalar mean of variant c over neurons (the code's variant d)
        ``"bounded"``: variant c without the threshold factor, scaled down by the largest row excess so
                       that max_j (alpha_j + sum_i max(W[j, i], 0) g_i) <= 1 holds exactly.
    Why ``bounded`` exists: the SG factor of the transition Jacobian belongs to the *pre*-synaptic neuron
    (J[j, i] = W[j, i] SG_i), so a per-neuron g_j computed from neuron j's incoming row does not by itself
    bound the row sums; ``bounded`` guarantees the worst-case gain (``residual`` = worst-case gain - 1).

    The dampening is always positive and finite; the degenerate rows are named in ``fallback`` (counts in
    ``extra``):
    - no positive input (S+_j = 0): any dampening meets the row bound; the largest value of the others;
    - no negative input under the subtractive reset (S-_j = 0, e.g. all weights equal after condition
      II's variance-0 fallback, or small widths): the threshold factor is 0 there, so the row bound
      (1 - alpha_j) / S+_j, which that factor only tightens, is used;
    - no leak (alpha_j = 1, what exp(-1/tau) rounds to in float32 for tau > 2^25 steps): no positive
      dampening keeps the gain <= 1 (infeasible); the leak is taken as 2^-25, the largest value that
      rounds to alpha = 1, so the bound is missed by at most that much.
    Raises ValueError for non-finite weights, alpha outside [0, 1] or a threshold outside (0, inf).

    Examples:
        >>> w = torch.tensor([[0.0, 0.5], [0.25, 0.0]]); a = torch.zeros(2); th = torch.ones(2)
        >>> condition_iii(w, a, th, "multiplicative").chosen
        tensor([2., 4.])
        >>> condition_iii(w, a, th, "multiplicative", variant="bounded").residual <= 1e-12
        True
    """
    check_reset(reset)
    if variant not in III_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(III_VARIANTS)}, got {variant!r}")
    w, alpha, thr = weight_hh.double(), alpha.double(), threshold.double()
    _check_iii_inputs(w, alpha, thr)
    w_pos = w.clamp_min(0)
    has_input = w_pos.sum(1) > 0
    no_leak = (alpha >= 1) & has_input  # gain alpha + g S+ > 1 for every g > 0
    leak = (1.0 - alpha).clamp_min(2.0**-25)  # only alpha = 1 is below: float32 steps are 2^-24 under 1
    damp, no_neg = _row_dampening(w, leak, thr, reset, variant)
    damp = damp.clamp(_F32.tiny, _F32.max)  # representable in the SG's float32 (extreme weights only)
    gain = (alpha + w_pos @ damp).max()
    counts = {
        "no_positive_input": int((~has_input).sum()),
        "no_negative_input": int(no_neg.sum()),
        "no_leak": int(no_leak.sum()),
    }
    return ConditionResult(
        "III",
        "worst-case transition gain",
        1.0,
        "dampening",
        damp.float(),
        bool(has_input.any() and not no_leak.any()),
        fallback=_iii_fallback(counts),
        residual=float(gain) - 1.0,
        note="" if variant == "bounded" else "row bound not guaranteed per neuron",
        extra={"worst_case_gain": float(gain), "variant": variant, **counts},
    )


def _check_iii_inputs(w: Tensor, alpha: Tensor, thr: Tensor) -> None:
    if not torch.isfinite(w).all():
        raise ValueError("weight_hh must be finite (no NaN or inf)")
    if not torch.isfinite(alpha).all() or (alpha < 0).any() or (alpha > 1).any():
        raise ValueError(
            f"alpha must be in [0, 1] (the per-step decay exp(-1/tau)), got min {alpha.min().item():g}, "
            f"max {alpha.max().item():g}"
        )
    if not torch.isfinite(thr).all() or (thr <= 0).any():
        raise ValueError(f"threshold must be finite and > 0 (accepted range (0, inf)), got min {thr.min().item():g}")


def _row_dampening(w: Tensor, leak: Tensor, thr: Tensor, reset: str, variant: str) -> tuple[Tensor, Tensor]:
    """Condition III's dampening per neuron for ``variant`` (before clamping to float32), and the mask of
    the neurons without negative input that got the row bound instead of the threshold factor."""
    w_pos = w.clamp_min(0)
    s_pos = w_pos.sum(1)
    s_neg = w.clamp_max(0).sum(1).abs()
    has_input = s_pos > 0
    row = leak / s_pos.clamp_min(1e-300)  # alpha_j + g_j S+_j = 1
    damp = row
    no_neg = torch.zeros_like(has_input)
    if reset == "subtract" and variant != "bounded":
        damp = row * s_neg / (s_neg + thr)
        no_neg = has_input & (s_neg == 0)
        damp = torch.where(no_neg, row, damp)
    if not has_input.all():
        damp = torch.where(has_input, damp, damp[has_input].max() if has_input.any() else torch.ones_like(damp))
    if variant == "mean":
        damp = damp.mean().expand_as(damp).clone()
    if variant == "bounded":
        damp = damp * (leak / (w_pos @ damp).clamp_min(1e-300)).min().clamp_max(1.0)
    return damp, no_neg


_III_FALLBACKS = (
    ("no_positive_input", "neurons without positive input got the largest dampening of the others"),
    ("no_negative_input", "neurons without negative input (threshold factor 0) got the row bound (1 - alpha) / S+"),
    ("no_leak", "neurons without leak (alpha = 1) cannot meet the bound: leak taken as 2^-25"),
)


def _iii_fallback(counts: dict[str, int]) -> str | None:
    return "; ".join(f"{counts[key]} {text}" for key, text in _III_FALLBACKS if counts[key]) or None


# --- condition IV -------------------------------------------------------------------------------------


def paper_voltage_bounds(
    weight_ih: Tensor, weight_hh: Tensor, alpha: Tensor, threshold: Tensor, reset: str
) -> tuple[Tensor, Tensor]:
    """Centred voltage bounds (v - threshold) under constant all-positive / all-negative drive, as in the
    official code: y_max = (S+ + S+_in) / (1 - alpha), y_min = (S- + S-_in - th_eff) / (1 - alpha)."""
    check_reset(reset)
    w, wi = weight_hh.double(), weight_ih.double()
    alpha, thr = alpha.double(), threshold.double()
    th_eff = thr if reset == "subtract" else torch.zeros_like(thr)
    y_max = (w.clamp_min(0).sum(1) + wi.clamp_min(0).sum(1)) / (1.0 - alpha)
    y_min = (w.clamp_max(0).sum(1) + wi.clamp_max(0).sum(1) - th_eff) / (1.0 - alpha)
    return y_min - thr, y_max - thr


class Recording(Protocol):
    """What :meth:`TransitionTerms.from_trace` reads from a recorded run (``spikestab.stability.measure.Trace``
    is one): [T, B, H] tensors of the voltages ``v``, thresholds ``thr``, input current ``current`` and
    recurrent current ``recurrent``, and ``previous(field)``, the field shifted one step later."""

    v: Tensor
    thr: Tensor
    current: Tensor

    @property
    def recurrent(self) -> Tensor: ...

    def previous(self, field: str) -> Tensor: ...


@dataclass
class TransitionTerms:
    """Recorded pieces of the transition Jacobian J = diag(d) + diag(r) W diag(s) on N = steps x batch
    samples (see ``spikestab.stability.measure``), with d = d0 + ce * s and s = SG(u) the surrogate
    derivative at the recorded centred voltages u = v_{t-1} - A_{t-1}."""

    u: Tensor  # [N, H] centred voltages at t-1
    d0: Tensor  # [N, H] leak part of the diagonal
    ce: Tensor | None  # [N, H] reset-path coefficient of s on the diagonal (detach_reset=False)
    r: Tensor | None  # [N, H] row factor (1 - z_{t-1}) for multiplicative_all
    col: Tensor  # [N, H] or [H]: sum_j r_j^2 W[j, i]^2
    wdiag: Tensor  # [H] diagonal of W (0 when masked)
    w: Tensor  # [H, H] the effective recurrent weights

    @classmethod
    def from_trace(
        cls,
        trace: Recording,
        weight_hh: Tensor,
        alpha: Tensor,
        reset: str,
        detach_reset: bool,
        rho: Tensor | None = None,
        beta_adapt: Tensor | None = None,
        start: int | None = None,
    ) -> TransitionTerms:
        """Build the terms from a recorded run, over the steps ``start`` .. T-1 (default: second half)."""
        check_reset(reset)
        if (rho is None) != (beta_adapt is None):
            raise ValueError("give rho and beta_adapt together (an ALIF layer) or neither (LIF)")
        n_t = trace.v.shape[0]
        t0 = max(1, n_t // 2 if start is None else start)
        # float32: the sums below run over <= H terms per sample, far inside condition IV's tolerance
        flat = lambda t: t[t0:].float().reshape(-1, t.shape[-1])  # noqa: E731
        w = weight_hh.float()
        alpha = alpha.float()
        z_prev, v_prev = flat(trace.previous("z")), flat(trace.previous("v"))
        u = v_prev - flat(trace.previous("thr"))
        r = None
        if reset == "multiplicative":
            d0 = alpha * (1.0 - z_prev)
        elif reset == "multiplicative_all":
            r = 1.0 - z_prev
            d0 = alpha * r
        else:
            d0 = alpha.expand_as(u)
        ce = None
        if not detach_reset:
            if reset == "subtract":
                thr_now = flat(trace.thr)
                extra = 0.0 if rho is None or beta_adapt is None else beta_adapt.float() * (1.0 - rho.float()) * z_prev
                ce = -(thr_now + extra)
            elif reset == "multiplicative":
                ce = -alpha * v_prev
            elif reset == "multiplicative_all":
                total = flat(trace.current) + flat(trace.recurrent)
                ce = -(alpha * v_prev + total)
        col = (r**2) @ (w**2) if r is not None else (w**2).sum(0)
        return cls(u, d0, ce, r, col, torch.diagonal(w).clone(), w)

    def mean_square_gain(self, sg: Tensor) -> float:
        """E ||J||_F^2 / H for SG values ``sg`` [N, H] at the recorded voltages."""
        d = self.d0 if self.ce is None else self.d0 + self.ce * sg
        r = 1.0 if self.r is None else self.r
        total = (d**2).sum(1) + 2.0 * (d * r * self.wdiag * sg).sum(1) + (self.col * sg**2).sum(1)
        return total.double().mean().item() / self.u.shape[1]

    def uniform_mode_gain(self, sg: Tensor) -> float:
        """Mean row sum of J: its gain along the uniform direction (all neurons together). A recurrent
        weight mean mu adds an outlier eigenvalue of about (n-1) mu E[SG] there, which the mean-square
        gain (a sum of squares) does not see; above 1 it makes BPTT gradients grow like its log."""
        d = self.d0 if self.ce is None else self.d0 + self.ce * sg
        r = 1.0 if self.r is None else self.r
        return (d + r * (sg @ self.w.t())).double().mean().item()


def condition_iv(
    spike_fn: SurrogateGradient,
    weight_hh: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    reset: str,
    *,
    solve_for: str = "sharpness",
    detach_reset: bool = True,
    bounds: tuple[Tensor, Tensor] | None = None,
    terms: TransitionTerms | None = None,
    bracket: tuple[float, float] | None = None,
) -> ConditionResult:
    """Sharpness (any SG shape) or tail fatness q (q-PseudoSpike) that makes the mean-square transition
    derivative E ||J||_F^2 / H equal to 1 (docs/theory.md, "Condition IV"). The dampening is the SG's current one
    (per neuron after condition III).

    ``paper`` mode (``bounds`` = centred voltage bounds from :func:`paper_voltage_bounds`): the voltage is
    uniform between the bounds and E[SG^2] comes from the SG's closed-form ``mean_square``; the residual is
        mean(alpha^2) E[m] + mean_i(c_i E[r^2] E_i[SG^2]) (+ mean(th^2 E[SG^2]) with a non-detached
        subtractive reset) - 1
    with c_i = sum_j W[j, i]^2, E[m] = 1/2 for the multiplicative resets (the leak survives a non-spike) and
    E[r^2] = 1/2 for multiplicative_all. Bracket: the code's [0.3, 1.6] for the sharpness.
    ``measured`` mode (``terms`` from the recorded voltages): the residual is
    ``terms.mean_square_gain(SG) - 1``, exactly the quantity :func:`~spikestab.stability.measure.measure_jacobian`
    measures by autograd. Bracket: 1e-3 .. 1e3 over the spread of the recorded voltages.
    The tail q is searched in [1.01, 100] with the sharpness fixed. No root in the bracket: ``feasible``
    is False and ``chosen`` is the argmin of |residual| over the bracket (the best reachable gain is in
    ``extra['best_gain']``). Paper mode (sharpness) also reports what the official code's solver returns,
    ``extra['official_code_sharpness']`` (see :func:`official_sharpness_search`; its 10^5 candidates per
    neuron cost about 0.6 s per 64 neurons), next to the argmin. Measured mode also reports
    ``extra['uniform_mode_gain']``, the mean row sum of J (see :meth:`TransitionTerms.uniform_mode_gain`),
    with a note when it exceeds 1.

    Examples:
        >>> sg = SurrogateGradient("exponential")
        >>> w = torch.full((3, 3), 0.8).fill_diagonal_(0); a = torch.zeros(3); th = torch.ones(3)
        >>> lo, hi = torch.full((3,), -1.0), torch.full((3,), 1.0)
        >>> res = condition_iv(sg, w, a, th, "subtract", bounds=(lo, hi), bracket=(0.01, 10.0))
        >>> res.feasible, abs(round(res.residual, 6))
        (True, 0.0)
    """
    check_reset(reset)
    if solve_for not in SOLVE_FOR:
        raise ValueError(f"solve_for must be 'sharpness' or 'tail', got {solve_for!r}")
    if solve_for == "tail" and spike_fn.shape != "q-pseudospike":
        raise ValueError(f"solve_for='tail' needs the q-pseudospike shape, got {spike_fn.shape!r}")
    if bounds is not None and terms is None:
        gain, default = _paper_gain(spike_fn, solve_for, weight_hh, alpha, threshold, reset, detach_reset, bounds)
        sg_values = None
    elif terms is not None and bounds is None:
        sg_values = _measured_sg(spike_fn, solve_for, terms.u)
        scale = terms.u.abs().median().item() or 1.0

        def gain(value: float) -> float:
            return terms.mean_square_gain(sg_values(value))

        default = (1e-3 / scale, 1e3 / scale) if solve_for == "sharpness" else TAIL_BRACKET
    else:
        raise ValueError("condition_iv needs exactly one of bounds (paper mode) or terms (measured mode)")
    lo_b, hi_b = bracket if bracket is not None else default
    res = scan_root(lambda x: gain(x) - 1.0, lo_b, hi_b, points=13, log=True, ftol=1e-4, max_iter=60)
    extra: dict[str, Any] = {
        "bracket": [lo_b, hi_b],
        "best_gain": res.value + 1.0,
        "gain_at_initial": gain(
            float(spike_fn.sharpness.detach().double().mean()) if solve_for == "sharpness" else spike_fn.tail
        ),
    }
    if solve_for == "sharpness":
        extra["residual_at_sharpness_1"] = gain(1.0) - 1.0
        if bounds is not None:  # what the official code's solver returns, next to the argmin above
            per_neuron = _paper_gain_per_neuron(spike_fn, weight_hh, alpha, threshold, reset, detach_reset, bounds)
            extra["official_code_sharpness"], extra["official_code_intended"] = official_sharpness_search(
                per_neuron, weight_hh.shape[0], device=weight_hh.device
            )
    note = ""
    if terms is not None and sg_values is not None:
        extra["uniform_mode_gain"] = terms.uniform_mode_gain(sg_values(res.x))
        note = _uniform_mode_note(extra["uniform_mode_gain"])
    return ConditionResult(
        "IV",
        "mean-square transition gain",
        1.0,
        solve_for,
        float(res.x),
        res.feasible,
        fallback=None if res.feasible else res.fallback,
        residual=res.value,
        note=note,
        extra=extra,
    )


def _with_value(spike_fn: SurrogateGradient, solve_for: str, value: float) -> SurrogateGradient:
    """The SG with its sharpness or tail (``solve_for``) set to ``value``."""
    if solve_for == "sharpness":
        return spike_fn.with_params(sharpness=torch.tensor(value, device=spike_fn.sharpness.device))
    return spike_fn.with_params(tail=value)


def _paper_terms(
    weight_hh: Tensor, alpha: Tensor, threshold: Tensor, reset: str, detach_reset: bool
) -> tuple[float, float, Tensor, Tensor]:
    """Paper mode's mean-square gain is leak + (row c_j + th_j^2) E_j[SG^2] per neuron j: its leak term, the
    reset's row factor, the column sums c_j of W_hh^2 and the reset term th_j^2 (zero for a detached or
    non-subtractive reset), in float64."""
    col = (weight_hh.double() ** 2).sum(0)
    leak = (alpha.double() ** 2).mean().item() * (0.5 if reset in ("multiplicative", "multiplicative_all") else 1.0)
    row = 0.5 if reset == "multiplicative_all" else 1.0
    reset_sq = threshold.double() ** 2 if (reset == "subtract" and not detach_reset) else torch.zeros_like(col)
    return leak, row, col, reset_sq


def _paper_gain(
    spike_fn: SurrogateGradient,
    solve_for: str,
    weight_hh: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    reset: str,
    detach_reset: bool,
    bounds: tuple[Tensor, Tensor],
) -> tuple[Callable[[float], float], tuple[float, float]]:
    """Paper mode: the mean-square gain as a function of the solved-for value (voltage uniform between
    the bounds, E[SG^2] in closed form), and the default bracket."""
    lo, hi = (b.double() for b in bounds)
    damp = spike_fn.dampening.detach().double()
    leak, row, col, reset_sq = _paper_terms(weight_hh, alpha, threshold, reset, detach_reset)

    def gain(value: float) -> float:
        sg = _with_value(spike_fn, solve_for, value)
        ms = sg.mean_square(lo, hi, dampening=damp, sharpness=sg.sharpness.double())
        return leak + (row * col * ms + reset_sq * ms).mean().item()

    return gain, PAPER_SHARPNESS_BRACKET if solve_for == "sharpness" else TAIL_BRACKET


def _paper_gain_per_neuron(
    spike_fn: SurrogateGradient,
    weight_hh: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    reset: str,
    detach_reset: bool,
    bounds: tuple[Tensor, Tensor],
) -> Callable[[Tensor], Tensor]:
    """Paper mode, per neuron: sharpness candidates [C, H] -> residual [C, H] of neuron j's term of the
    mean-square gain (leak + (row c_j + th_j^2) E_j[SG^2](sharpness) - 1)."""
    lo, hi = (b.double() for b in bounds)
    damp = spike_fn.dampening.detach().double()
    leak, row, col, reset_sq = _paper_terms(weight_hh, alpha, threshold, reset, detach_reset)

    def residual(sharpness: Tensor) -> Tensor:
        return leak + (row * col + reset_sq) * spike_fn.mean_square(lo, hi, dampening=damp, sharpness=sharpness) - 1.0

    return residual


def official_sharpness_search(
    residual: Callable[[Tensor], Tensor],
    neurons: int,
    candidates: int = OFFICIAL_CANDIDATES,
    seed: int = 0,
    chunk: int = 2_000,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Condition IV's sharpness as the official code's default solver computes it, and as it intends to.

    The code draws ``candidates`` sharpness values per neuron uniformly from PAPER_SHARPNESS_BRACKET, takes
    the per-neuron argmin of residual^2 over them, and averages over neurons. It looks the argmin indices up
    with ``np.take(seeds, argmin)`` without an axis, i.e. in the *flattened* [candidates, neurons] array, so
    it returns values from the first rows whatever the residual: about the bracket's mean (0.95; the
    paper's Figure 5 draws 1.02). Returns (that value, the intended mean per-neuron argmin), from a seeded
    generator. ``residual`` maps per-neuron candidates [C, neurons] on ``device`` to residuals [C, neurons];
    the candidates are drawn on the CPU (the same on every device) and moved there."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = PAPER_SHARPNESS_BRACKET
    keep = -(-candidates // neurons)  # rows of the candidate array that flat indices < candidates reach
    head: list[Tensor] = []
    best_r = torch.full((neurons,), math.inf, dtype=torch.float64, device=device)
    best_x = torch.zeros(neurons, dtype=torch.float64, device=device)
    best_i = torch.zeros(neurons, dtype=torch.long, device=device)
    for done in range(0, candidates, chunk):
        unit = torch.rand(min(chunk, candidates - done), neurons, generator=gen, dtype=torch.float64, device="cpu")
        draws = lo + (hi - lo) * unit.to(device)
        val, idx = (residual(draws) ** 2).min(0)
        better = val < best_r
        best_r = torch.where(better, val, best_r)
        best_x = torch.where(better, draws.gather(0, idx[None]).squeeze(0), best_x)
        best_i = torch.where(better, idx + done, best_i)
        if done < keep:
            head.append(draws[: keep - done])
    flat = torch.cat(head).flatten()
    return float(flat[best_i].mean()), float(best_x.mean())


def _measured_sg(spike_fn: SurrogateGradient, solve_for: str, u: Tensor) -> Callable[[float], Tensor]:
    """Measured mode: the SG values at the recorded centred voltages ``u`` as a function of the
    solved-for value (the dampening, and for the tail the sharpness, kept)."""
    damp_u = spike_fn.dampening.detach().double().to(u.dtype)
    sharp_u = spike_fn.sharpness.detach().double().to(u.dtype)

    def values(value: float) -> Tensor:
        if solve_for == "sharpness":
            return damp_u * spike_fn.shape_fn(value * u)
        return damp_u * _with_value(spike_fn, solve_for, value).shape_fn(sharp_u * u)

    return values


def _uniform_mode_note(gain: float) -> str:
    if gain <= 1.05:
        return ""
    return (
        f"the recurrent mean gives J an outlier gain {gain:.3g} along the uniform direction that the "
        f"mean-square gain does not see: expect BPTT growth near {math.log(gain):.3g} per step"
    )
