"""Surrogate-gradient (SG) family with orthogonal dampening, sharpness and tail parameters.

Forward is the Heaviside step H(v) = 1[v > 0] on the centred voltage v = v_t - threshold, and NaN
where v is NaN or +-inf (``heaviside``: a non-finite voltage shows in the spikes). Backward
is ``dampening * f(sharpness * v)`` where every shape f has f(0) = 1 and unit area (docs/theory.md,
"Surrogate gradients"), so an SG has peak ``dampening`` and area ``dampening / sharpness`` whatever its shape.

Each shape also gives closed forms of the antiderivatives of f and f**2; the stability conditions use
them to take expectations of the SG under uniform voltages (``paper`` mode), and the learnable
dampening/sharpness use the antiderivative of f as the "primitive" the gradient belongs to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ALIASES",
    "DEFAULT_TAIL",
    "SHAPES",
    "canonical_shape",
    "SurrogateGradient",
    "get",
    "heaviside",
    "from_snntorch",
    "from_spikingjelly",
    "from_norse",
    "from_sinabs",
    "from_lava_dl",
]

_SQRT_PI = math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _rect_f(u: Tensor, q: float) -> Tensor:
    return (2.0 * u.abs() < 1.0).to(u.dtype)


def _rect_int(u: Tensor, q: float) -> Tensor:
    return u.clamp(-0.5, 0.5)


def _tri_f(u: Tensor, q: float) -> Tensor:
    return (1.0 - u.abs()).clamp_min(0.0)


def _tri_int(u: Tensor, q: float) -> Tensor:
    m = u.abs().clamp_max(1.0)
    return u.sign() * (m - 0.5 * m * m)


def _tri_int_sq(u: Tensor, q: float) -> Tensor:
    m = u.abs().clamp_max(1.0)
    return u.sign() * (1.0 - (1.0 - m) ** 3) / 3.0


def _exp_f(u: Tensor, q: float) -> Tensor:
    return torch.exp(-2.0 * u.abs())


def _exp_int(u: Tensor, q: float) -> Tensor:
    return u.sign() * (-torch.expm1(-2.0 * u.abs())) / 2.0


def _exp_int_sq(u: Tensor, q: float) -> Tensor:
    return u.sign() * (-torch.expm1(-4.0 * u.abs())) / 4.0


def _gauss_f(u: Tensor, q: float) -> Tensor:
    return torch.exp(-math.pi * u * u)


def _gauss_int(u: Tensor, q: float) -> Tensor:
    return torch.erf(_SQRT_PI * u) / 2.0


def _gauss_int_sq(u: Tensor, q: float) -> Tensor:
    return torch.erf(_SQRT_2PI * u) / (2.0 * math.sqrt(2.0))


def _sigmoid_f(u: Tensor, q: float) -> Tensor:
    # 4 s(4u)(1 - s(4u)) written with exp(-4|u|) so that it never overflows.
    e = torch.exp(-4.0 * u.abs())
    return 4.0 * e / (1.0 + e) ** 2


def _sigmoid_int(u: Tensor, q: float) -> Tensor:
    return torch.sigmoid(4.0 * u) - 0.5


def _sigmoid_int_sq(u: Tensor, q: float) -> Tensor:
    # d/du of 2s^2 - 4s^3/3 is 16 s^2 (1-s)^2 with s = sigmoid(4u); centred so that F(0) = 0.
    s = torch.sigmoid(4.0 * u)
    return 2.0 * s * s - (4.0 / 3.0) * s**3 - 1.0 / 3.0


def _fast_sigmoid_f(u: Tensor, q: float) -> Tensor:
    return 1.0 / (1.0 + 2.0 * u.abs()) ** 2


def _fast_sigmoid_int(u: Tensor, q: float) -> Tensor:
    return u / (1.0 + 2.0 * u.abs())


def _fast_sigmoid_int_sq(u: Tensor, q: float) -> Tensor:
    return u.sign() * (1.0 - (1.0 + 2.0 * u.abs()) ** -3) / 6.0


def _qps_base(u: Tensor, q: float) -> Tensor:
    return 1.0 + 2.0 * u.abs() / (q - 1.0)


def _qps_f(u: Tensor, q: float) -> Tensor:
    return _qps_base(u, q) ** (-q)


def _qps_int(u: Tensor, q: float) -> Tensor:
    return u.sign() * (1.0 - _qps_base(u, q) ** (1.0 - q)) / 2.0


def _qps_int_sq(u: Tensor, q: float) -> Tensor:
    return u.sign() * (q - 1.0) / 2.0 * (1.0 - _qps_base(u, q) ** (1.0 - 2.0 * q)) / (2.0 * q - 1.0)


def _atan_f(u: Tensor, q: float) -> Tensor:
    return 1.0 / (1.0 + (math.pi * u) ** 2)


def _atan_int(u: Tensor, q: float) -> Tensor:
    return torch.atan(math.pi * u) / math.pi


def _atan_int_sq(u: Tensor, q: float) -> Tensor:
    w = math.pi * u
    # w / (1 + w^2) written as 1 / (1/w + w) so that it stays finite for huge |w|.
    ratio = torch.where(w == 0, torch.zeros_like(w), 1.0 / (1.0 / w + w))
    return (ratio / 2.0 + torch.atan(w) / 2.0) / math.pi


ShapeFn = Callable[[Tensor, float], Tensor]

# name -> (f, antiderivative of f, antiderivative of f^2, integral of f^2 over R as a function of q)
SHAPES: dict[str, tuple[ShapeFn, ShapeFn, ShapeFn, Callable[[float], float]]] = {
    "rectangular": (_rect_f, _rect_int, _rect_int, lambda q: 1.0),
    "triangular": (_tri_f, _tri_int, _tri_int_sq, lambda q: 2.0 / 3.0),
    "exponential": (_exp_f, _exp_int, _exp_int_sq, lambda q: 0.5),
    "gaussian": (_gauss_f, _gauss_int, _gauss_int_sq, lambda q: 1.0 / math.sqrt(2.0)),
    "sigmoid": (_sigmoid_f, _sigmoid_int, _sigmoid_int_sq, lambda q: 2.0 / 3.0),
    "fast-sigmoid": (_fast_sigmoid_f, _fast_sigmoid_int, _fast_sigmoid_int_sq, lambda q: 1.0 / 3.0),
    "q-pseudospike": (_qps_f, _qps_int, _qps_int_sq, lambda q: (q - 1.0) / (2.0 * q - 1.0)),
    "arctan": (_atan_f, _atan_int, _atan_int_sq, lambda q: 0.5),
}

# other names of the shapes (other libraries' and the official code's spellings)
ALIASES = {
    "rect": "rectangular",
    "triangle": "triangular",
    "exp": "exponential",
    "fastsigmoid": "fast-sigmoid",
    "fast_sigmoid": "fast-sigmoid",
    "superspike": "fast-sigmoid",
    "q_pseudospike": "q-pseudospike",
    "qpseudospike": "q-pseudospike",
    "ntail": "q-pseudospike",
    "atan": "arctan",
}

DEFAULT_TAIL = 1.56  # the official code's default q


def canonical_shape(name: str) -> str:
    """The shape's name in ``SHAPES`` for ``name`` or one of its ``ALIASES`` (unknown names unchanged)."""
    return ALIASES.get(name, name)


def _check_positive(name: str, value: float | Tensor, strict: bool = True) -> None:
    t = torch.as_tensor(value, dtype=torch.float64)
    bound, accepted = ("> 0", "(0, inf)") if strict else (">= 0", "[0, inf)")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite and {bound} (accepted range {accepted}), got {value!r}")
    bad = (t <= 0) if strict else (t < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and {bound} (accepted range {accepted}), got min {t.min().item():g}")


def heaviside(v: Tensor, out: Tensor | None = None) -> Tensor:
    """The spike function's forward on the centred voltage ``v``: 1 where v > 0, 0 where v <= 0, NaN
    where v is NaN or +-inf (into ``out`` when given). A non-finite voltage (from a NaN or inf in a
    layer's input, state or parameters) so gives NaN spikes instead of plausible zeros and ones; every
    kernel follows this rule (docs/theory.md, "Non-finite values"). 0 * v is 0 for a finite v and NaN
    otherwise, which the addition carries into the spikes."""
    z = torch.gt(v, 0, out=out) if out is not None else (v > 0).to(v.dtype)
    return z.add_(v, alpha=0.0)


class _SpikeFunction(torch.autograd.Function):
    """H(v) forward; SG backward, plus gradients of the SG primitive w.r.t. dampening/sharpness."""

    @staticmethod
    def forward(ctx, v: Tensor, dampening: Tensor, sharpness: Tensor, sg: SurrogateGradient) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v, dampening, sharpness)
        ctx.sg = sg
        return heaviside(v)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        v, dampening, sharpness = ctx.saved_tensors
        sg: SurrogateGradient = ctx.sg
        work = v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
        g = grad_out.to(work.dtype)
        u = sharpness.to(work.dtype) * work
        f = sg._f(u, sg.tail)
        grad_v = (g * dampening.to(work.dtype) * f).to(v.dtype)
        grad_d = grad_s = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # primitive P(v) = dampening / sharpness * F(sharpness v)
            big_f = sg._int(u, sg.tail)
            if ctx.needs_input_grad[1]:
                grad_d = _reduce_to(g * big_f / sharpness, dampening)
            if ctx.needs_input_grad[2]:
                dp_ds = dampening * (work * f / sharpness - big_f / sharpness**2)
                grad_s = _reduce_to(g * dp_ds, sharpness)
        return grad_v, grad_d, grad_s, None


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to the shape of a (scalar or per-neuron) parameter."""
    while grad.dim() > like.dim():
        grad = grad.sum(0)
    for i, n in enumerate(like.shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad.to(like.dtype)


class SurrogateGradient(nn.Module):
    """A spike function: Heaviside forward (``heaviside``: NaN for a non-finite voltage),
    ``dampening * f(sharpness * v)`` backward.

    ``dampening`` and ``sharpness`` are scalars or per-neuron tensors (broadcast over the last axis);
    with ``learnable=True`` they are trained as the dampening/sharpness of the SG primitive. ``tail`` is
    the q of the q-PseudoSpike shape (q > 1; smaller q = fatter tails).
    """

    def __init__(
        self,
        shape: str = "fast-sigmoid",
        dampening: float | Tensor = 1.0,
        sharpness: float | Tensor = 1.0,
        tail: float | None = None,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        name = canonical_shape(shape)
        if name not in SHAPES:
            raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
        _check_positive("dampening", dampening)
        _check_positive("sharpness", sharpness)
        if name == "q-pseudospike":
            tail = DEFAULT_TAIL if tail is None else float(tail)
            if not math.isfinite(tail) or tail <= 1.0:
                raise ValueError(f"tail must be a finite q > 1 (accepted range (1, inf)), got {tail!r}")
        elif tail is not None:
            raise ValueError(f"tail is only accepted by the q-pseudospike shape, not by {name!r}")
        self.shape = name
        self.tail = tail if tail is not None else 0.0
        self._f, self._int, self._int_sq, self._ms = SHAPES[name]
        d = torch.as_tensor(dampening, dtype=torch.float32).clone()
        s = torch.as_tensor(sharpness, dtype=torch.float32).clone()
        if learnable:
            self.dampening = nn.Parameter(d)
            self.sharpness = nn.Parameter(s)
        else:
            self.register_buffer("dampening", d)
            self.register_buffer("sharpness", s)

    def extra_repr(self) -> str:
        def fmt(t: Tensor) -> str:
            return f"{t.item():.4g}" if t.numel() == 1 else f"per-neuron(mean={t.mean().item():.4g})"

        tail = f", tail={self.tail:.4g}" if self.shape == "q-pseudospike" else ""
        return f"shape={self.shape!r}, dampening={fmt(self.dampening)}, sharpness={fmt(self.sharpness)}{tail}"

    def forward(self, v: Tensor) -> Tensor:
        """Spikes H(v) of the centred voltage ``v``; gradients flow through the SG."""
        return _SpikeFunction.apply(v, self.dampening, self.sharpness, self)

    def derivative(self, v: Tensor) -> Tensor:
        """The SG itself, dampening * f(sharpness * v), as a plain tensor (used by fused kernels)."""
        return self.dampening * self._f(self.sharpness * v, self.tail)

    def shape_fn(self, u: Tensor) -> Tensor:
        """The normalised shape f(u) with f(0) = 1 and unit area."""
        return self._f(u, self.tail)

    def antiderivative(self, u: Tensor) -> Tensor:
        """Closed-form F(u) = integral_0^u f."""
        return self._int(u, self.tail)

    def antiderivative_sq(self, u: Tensor) -> Tensor:
        """Closed-form F2(u) = integral_0^u f^2."""
        return self._int_sq(u, self.tail)

    def mean_square_integral(self) -> float:
        """Integral of f(u)^2 over the real line (1/3 fast-sigmoid, 1/2 exponential, ...)."""
        return self._ms(self.tail)

    def mean_square(self, lo: Tensor | float, hi: Tensor | float, dampening=None, sharpness=None) -> Tensor:
        """E[SG(v)^2] for v uniform on [lo, hi] (per neuron when lo/hi are vectors), in closed form."""
        return self._uniform_moment(self._int_sq, 2, lo, hi, dampening, sharpness)

    def mean(self, lo: Tensor | float, hi: Tensor | float, dampening=None, sharpness=None) -> Tensor:
        """E[SG(v)] for v uniform on [lo, hi], in closed form."""
        return self._uniform_moment(self._int, 1, lo, hi, dampening, sharpness)

    def _uniform_moment(self, anti: ShapeFn, power: int, lo, hi, dampening, sharpness) -> Tensor:
        d = self.dampening if dampening is None else torch.as_tensor(dampening)
        s = self.sharpness if sharpness is None else torch.as_tensor(sharpness)
        lo_t = torch.as_tensor(lo, dtype=torch.float64)
        hi_t = torch.as_tensor(hi, dtype=torch.float64)
        d = d.to(torch.float64)
        s = s.to(torch.float64)
        width = (hi_t - lo_t).clamp_min(1e-12)
        return d**power / (s * width) * (anti(s * hi_t, self.tail) - anti(s * lo_t, self.tail))

    def with_params(self, dampening=None, sharpness=None, tail=None) -> SurrogateGradient:
        """A copy with some parameters replaced (used by the stability conditions)."""
        return SurrogateGradient(
            self.shape,
            self.dampening.detach().clone() if dampening is None else dampening,
            self.sharpness.detach().clone() if sharpness is None else sharpness,
            (self.tail if self.shape == "q-pseudospike" else None) if tail is None else tail,
            learnable=isinstance(self.dampening, nn.Parameter),
        )


def get(
    name: str, dampening: float | Tensor = 1.0, sharpness: float | Tensor = 1.0, tail: float | None = None
) -> SurrogateGradient:
    """Build an SG by name: rectangular, triangular, exponential, gaussian, sigmoid, fast-sigmoid,
    q-pseudospike, arctan."""
    return SurrogateGradient(name, dampening=dampening, sharpness=sharpness, tail=tail)


# --- converters from peer libraries' parameterisations --------------------------------------------
# Each maps a peer's surrogate derivative g(x) exactly onto dampening * f(sharpness * x).


def from_snntorch(name: str, slope: float | None = None, alpha: float | None = None) -> SurrogateGradient:
    """snnTorch surrogates.

    - ``fast_sigmoid(slope=k)``: g = 1/(k|x|+1)^2  -> fast-sigmoid, dampening 1, sharpness k/2.
    - ``sigmoid(slope=k)``: g = k s(kx)(1-s(kx))    -> sigmoid, dampening k/4, sharpness k/4.
    - ``atan(alpha=a)``: g = (a/2)/(1+(pi a x/2)^2) -> arctan, dampening a/2, sharpness a/2.
    - ``triangular()``: g = max(1-|x|, 0) (threshold 1) -> triangular, dampening 1, sharpness 1.
    """
    if name == "fast_sigmoid":
        k = 25.0 if slope is None else float(slope)
        _check_positive("slope", k)
        return get("fast-sigmoid", 1.0, k / 2.0)
    if name == "sigmoid":
        k = 25.0 if slope is None else float(slope)
        _check_positive("slope", k)
        return get("sigmoid", k / 4.0, k / 4.0)
    if name == "atan":
        a = 2.0 if alpha is None else float(alpha)
        _check_positive("alpha", a)
        return get("arctan", a / 2.0, a / 2.0)
    if name == "triangular":
        return get("triangular", 1.0, 1.0)
    raise ValueError(f"name must be one of ['atan', 'fast_sigmoid', 'sigmoid', 'triangular'], got {name!r}")


def from_spikingjelly(name: str, alpha: float) -> SurrogateGradient:
    """SpikingJelly surrogates.

    - ``Sigmoid(alpha=a)``: g = a s(ax)(1-s(ax))          -> sigmoid, dampening a/4, sharpness a/4.
    - ``ATan(alpha=a)``: g = (a/2)/(1+(pi a x/2)^2)        -> arctan, dampening a/2, sharpness a/2.
    - ``QPseudoSpike(alpha=q)``: g = (1+2|x|/(q-1))^(-q)   -> q-pseudospike, tail q, dampening 1, sharpness 1.
    """
    _check_positive("alpha", alpha)
    a = float(alpha)
    if name == "Sigmoid":
        return get("sigmoid", a / 4.0, a / 4.0)
    if name == "ATan":
        return get("arctan", a / 2.0, a / 2.0)
    if name == "QPseudoSpike":
        return get("q-pseudospike", 1.0, 1.0, tail=a)
    raise ValueError(f"name must be one of ['ATan', 'QPseudoSpike', 'Sigmoid'], got {name!r}")


def from_norse(method: str = "super", alpha: float = 100.0, alpha_in_backward: bool = False) -> SurrogateGradient:
    """Norse ``method="super"`` (SuperSpike, the Norse default).

    Norse 1.1.0's ``SuperSpike.backward`` ignores ``alpha`` and computes g = 1/(|x|+1)^2 (see
    ``norse/torch/functional/superspike.py``): fast-sigmoid, dampening 1, sharpness 1/2, whatever alpha.
    ``alpha_in_backward=True`` gives the SuperSpike paper's g = 1/(alpha|x|+1)^2 instead (sharpness alpha/2).
    """
    _check_positive("alpha", alpha)
    if method != "super":
        raise ValueError(f"method must be 'super' (the Norse default), got {method!r}")
    return get("fast-sigmoid", 1.0, (float(alpha) if alpha_in_backward else 1.0) / 2.0)


def from_sinabs(grad_width: float = 0.5, grad_scale: float = 1.0, threshold: float = 1.0) -> SurrogateGradient:
    """sinabs ``SingleExponential(grad_width=w, grad_scale=s)``, width relative to the threshold th:
    g = s/(w th) exp(-|x|/(w th)) -> exponential, dampening s/(w th), sharpness 1/(2 w th)."""
    _check_positive("grad_width", grad_width)
    _check_positive("grad_scale", grad_scale)
    _check_positive("threshold", threshold)
    width = float(grad_width) * float(threshold)
    return get("exponential", float(grad_scale) / width, 1.0 / (2.0 * width))


def from_lava_dl(tau_grad: float = 1.0, scale_grad: float = 1.0, threshold: float = 1.0) -> SurrogateGradient:
    """lava-dl ``tau_grad``/``scale_grad`` (width relative to threshold, tau = tau_grad * th):
    g = scale/(2 tau) exp(-|x|/tau) -> exponential, dampening scale/(2 tau), sharpness 1/(2 tau)."""
    _check_positive("tau_grad", tau_grad)
    _check_positive("scale_grad", scale_grad)
    _check_positive("threshold", threshold)
    tau = float(tau_grad) * float(threshold)
    return get("exponential", float(scale_grad) / (2.0 * tau), 1.0 / (2.0 * tau))
