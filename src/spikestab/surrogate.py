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

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ALIASES",
    "BOUNDED_SUPPORT",
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
    "PEER_RTOL",
    "snntorch_params",
    "spikingjelly_params",
    "to_snntorch",
    "to_norse",
    "to_spikingjelly",
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

# the shapes whose f is exactly zero outside a bounded interval (|u| <= 1 or 1/2): their surrogate
# gradient is zero at most neurons and steps, which the native backward's sparse adjoint product uses
BOUNDED_SUPPORT = frozenset({"rectangular", "triangular"})

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
    t = torch.as_tensor(value, dtype=torch.float64, device="cpu")  # a check on the host
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
        f = sg.shape_fn(u)
        grad_v = (g * dampening.to(work.dtype) * f).to(v.dtype)
        grad_d = grad_s = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # primitive P(v) = dampening / sharpness * F(sharpness v)
            big_f = sg.antiderivative(u)
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

    @property
    def _functions(self) -> tuple[ShapeFn, ShapeFn, ShapeFn, Callable[[float], float]]:
        """The shape's f, its antiderivative, that of f^2 and the integral of f^2 (``SHAPES``), looked up
        rather than stored, so that an SG pickles (``torch.save`` of a whole model)."""
        return SHAPES[self.shape]

    def forward(self, v: Tensor) -> Tensor:
        """Spikes H(v) of the centred voltage ``v``; gradients flow through the SG."""
        return _SpikeFunction.apply(v, self.dampening, self.sharpness, self)

    def derivative(self, v: Tensor) -> Tensor:
        """The SG itself, dampening * f(sharpness * v), as a plain tensor (used by fused kernels)."""
        return self.dampening * self._functions[0](self.sharpness * v, self.tail)

    def shape_fn(self, u: Tensor) -> Tensor:
        """The normalised shape f(u) with f(0) = 1 and unit area."""
        return self._functions[0](u, self.tail)

    def antiderivative(self, u: Tensor) -> Tensor:
        """Closed-form F(u) = integral_0^u f."""
        return self._functions[1](u, self.tail)

    def antiderivative_sq(self, u: Tensor) -> Tensor:
        """Closed-form F2(u) = integral_0^u f^2."""
        return self._functions[2](u, self.tail)

    def mean_square_integral(self) -> float:
        """Integral of f(u)^2 over the real line (1/3 fast-sigmoid, 1/2 exponential, ...)."""
        return self._functions[3](self.tail)

    def mean_square(self, lo: Tensor | float, hi: Tensor | float, dampening=None, sharpness=None) -> Tensor:
        """E[SG(v)^2] for v uniform on [lo, hi] (per neuron when lo/hi are vectors), in closed form."""
        return self._uniform_moment(self._functions[2], 2, lo, hi, dampening, sharpness)

    def mean(self, lo: Tensor | float, hi: Tensor | float, dampening=None, sharpness=None) -> Tensor:
        """E[SG(v)] for v uniform on [lo, hi], in closed form."""
        return self._uniform_moment(self._functions[1], 1, lo, hi, dampening, sharpness)

    def _uniform_moment(self, anti: ShapeFn, power: int, lo, hi, dampening, sharpness) -> Tensor:
        dev = self.dampening.device
        d = self.dampening if dampening is None else torch.as_tensor(dampening, device=dev)
        s = self.sharpness if sharpness is None else torch.as_tensor(sharpness, device=dev)
        lo_t = torch.as_tensor(lo, dtype=torch.float64, device=dev)
        hi_t = torch.as_tensor(hi, dtype=torch.float64, device=dev)
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


# --- converters from and to peer libraries' surrogates ---------------------------------------------
# Each maps a peer's surrogate derivative g(x) exactly onto dampening * f(sharpness * x), x = v - threshold.

_SNNTORCH_NAMES = ["atan", "fast_sigmoid", "sigmoid"]
_SPIKINGJELLY_NAMES = [
    "ATan",
    "Erf",
    "PiecewiseExp",
    "PiecewiseQuadratic",
    "QPseudoSpike",
    "Rect",
    "Sigmoid",
    "SoftSign",
    "SuperSpike",
]
_NORSE_METHODS = ["heavi_erfc", "super", "tanh", "triangle"]
# Norse's heavi_erfc derivative 2/sqrt(pi) exp(-(k x)^2) is the gaussian shape with this fixed peak.
_ERFC_PEAK = 2.0 / _SQRT_PI
# Two float32 parameters a peer ties together (dampening == sharpness, dampening == 1) count as equal within
# this relative tolerance (a few float32 ulps), so that values computed separately still convert.
PEER_RTOL = 1e-6


def _native_name(fn: object) -> str | None:
    """The snnTorch factory (``fast_sigmoid``, ...) that built the closure ``fn``, or None."""
    qualname = getattr(fn, "__qualname__", "")
    if getattr(fn, "__module__", None) == "snntorch.surrogate" and qualname.endswith(".<locals>.inner"):
        return qualname.split(".")[0]
    return None


def from_snntorch(
    name: str | Callable[[Tensor], Tensor], slope: float | None = None, alpha: float | None = None
) -> SurrogateGradient:
    """snnTorch 1.0 surrogates, by name and parameters or as the object ``snntorch.surrogate`` returned.

    - ``fast_sigmoid(slope=k)``: g = 1/(k|x|+1)^2  -> fast-sigmoid, dampening 1, sharpness k/2.
    - ``sigmoid(slope=k)``: g = k s(kx)(1-s(kx))    -> sigmoid, dampening k/4, sharpness k/4.
    - ``atan(alpha=a)``: g = (a/2)/(1+(pi a x/2)^2) -> arctan, dampening a/2, sharpness a/2.

    snnTorch 1.0's ``triangular`` is refused: its backward is +threshold below the threshold and
    -threshold above it (snntorch/surrogate.py, ``Triangular.backward``), a step rather than a triangle.
    """
    if not isinstance(name, str):
        fn, native = name, _native_name(name)
        if native is None:
            raise ValueError(
                f"name must be a surrogate name or an object built by snntorch.surrogate "
                f"({', '.join(_SNNTORCH_NAMES)}), got {fn!r}"
            )
        params = inspect.getclosurevars(fn).nonlocals
        name, slope, alpha = native, params.get("slope"), params.get("alpha")
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
        raise ValueError(
            "name 'triangular': snnTorch 1.0's triangular surrogate has derivative +threshold below "
            "the threshold and -threshold above it, which no spikestab shape is; accepted names "
            f"{_SNNTORCH_NAMES}"
        )
    raise ValueError(f"name must be one of {_SNNTORCH_NAMES}, got {name!r}")


def from_spikingjelly(name: str | nn.Module, alpha: float | None = None) -> SurrogateGradient:
    """SpikingJelly 2.0 surrogates (``activation_based.surrogate``), by class name and ``alpha`` or as the module.

    - ``Sigmoid(alpha=a)``: g = a s(ax)(1-s(ax))              -> sigmoid, dampening a/4, sharpness a/4.
    - ``ATan(alpha=a)``: g = (a/2)/(1+(pi a x/2)^2)            -> arctan, dampening a/2, sharpness a/2.
    - ``SoftSign(alpha=a)``: g = a/(2(1+a|x|)^2)               -> fast-sigmoid, dampening a/2, sharpness a/2.
    - ``SuperSpike(alpha=a)``: g = a/(|x|+1)^2                 -> fast-sigmoid, dampening a, sharpness 1/2.
    - ``PiecewiseExp(alpha=a)``: g = (a/2) exp(-a|x|)          -> exponential, dampening a/2, sharpness a/2.
    - ``Erf(alpha=a)``: g = (a/sqrt(pi)) exp(-(ax)^2)          -> gaussian, dampening a/sqrt(pi), sharpness a/sqrt(pi).
    - ``PiecewiseQuadratic(alpha=a)``: g = max(a - a^2|x|, 0)  -> triangular, dampening a, sharpness a.
    - ``Rect(alpha=a)``: g = a 1[|x| < 1/(2a)]                 -> rectangular, dampening a, sharpness a.
    - ``QPseudoSpike(alpha=q)``: g = (1+2|x|/(q-1))^(-q)       -> q-pseudospike, tail q, dampening 1, sharpness 1.
    """
    if not isinstance(name, str):
        module, name = name, type(name).__name__
        if getattr(module, "spiking", False) is not True or not hasattr(module, "alpha"):
            raise ValueError(
                f"name must be a class name or a SpikingJelly surrogate module in spiking mode with an "
                f"alpha ({', '.join(_SPIKINGJELLY_NAMES)}), got {module!r}"
            )
        alpha = float(module.alpha)  # type: ignore[arg-type]  # a float attribute of the peer module
    if name not in _SPIKINGJELLY_NAMES:
        raise ValueError(f"name must be one of {_SPIKINGJELLY_NAMES}, got {name!r}")
    if alpha is None:
        raise ValueError(f"alpha is required with the name {name!r} (accepted range (0, inf))")
    _check_positive("alpha", alpha)
    a = float(alpha)
    if name == "QPseudoSpike":
        return get("q-pseudospike", 1.0, 1.0, tail=a)
    if name == "SuperSpike":
        return get("fast-sigmoid", a, 0.5)
    shape, scale = {
        "Sigmoid": ("sigmoid", 0.25),
        "ATan": ("arctan", 0.5),
        "SoftSign": ("fast-sigmoid", 0.5),
        "PiecewiseExp": ("exponential", 0.5),
        "Erf": ("gaussian", 1.0 / _SQRT_PI),
        "PiecewiseQuadratic": ("triangular", 1.0),
        "Rect": ("rectangular", 1.0),
    }[name]
    return get(shape, a * scale, a * scale)


def from_norse(method: str = "super", alpha: float = 100.0, alpha_in_backward: bool = False) -> SurrogateGradient:
    """Norse 1.1 ``method``/``alpha`` (``LIFParameters``; ``norse.torch.functional.threshold``).

    - ``super`` (SuperSpike, the Norse default): Norse 1.1.0's ``SuperSpike.backward`` ignores ``alpha`` and
      computes g = 1/(|x|+1)^2 (``norse/torch/functional/superspike.py``): fast-sigmoid, dampening 1,
      sharpness 1/2, whatever alpha. ``alpha_in_backward=True`` gives the SuperSpike paper's
      g = 1/(alpha|x|+1)^2 instead (sharpness alpha/2).
    - ``triangle``: g = alpha max(1-|x|, 0)         -> triangular, dampening alpha, sharpness 1.
    - ``tanh``: g = 1 - tanh(alpha x)^2             -> sigmoid, dampening 1, sharpness alpha/2.
    - ``heavi_erfc``: g = 2/sqrt(pi) exp(-(alpha x)^2) -> gaussian, dampening 2/sqrt(pi), sharpness alpha/sqrt(pi).

    ``circ`` is refused: its derivative (1+(x/alpha)^2)^(-3/2) is no spikestab shape; so is ``heaviside``,
    which has no gradient.
    """
    _check_positive("alpha", alpha)
    a = float(alpha)
    if alpha_in_backward and method != "super":
        raise ValueError(f"alpha_in_backward applies to method 'super' only, got method {method!r}")
    if method == "super":
        return get("fast-sigmoid", 1.0, (a if alpha_in_backward else 1.0) / 2.0)
    if method == "triangle":
        return get("triangular", a, 1.0)
    if method == "tanh":
        return get("sigmoid", 1.0, a / 2.0)
    if method == "heavi_erfc":
        return get("gaussian", _ERFC_PEAK, a / _SQRT_PI)
    if method == "circ":
        raise ValueError(
            f"method 'circ': Norse's circ derivative (1+(x/alpha)^2)^(-3/2) is no spikestab shape; "
            f"accepted methods {_NORSE_METHODS}"
        )
    raise ValueError(f"method must be one of {_NORSE_METHODS}, got {method!r}")


def _scalar_params(sg: SurrogateGradient, library: str) -> tuple[float, float]:
    """(dampening, sharpness) of ``sg`` as floats; ValueError where they differ between neurons."""
    values = []
    for name in ("dampening", "sharpness"):
        t = getattr(sg, name).detach().reshape(-1)
        if not bool((t == t[0]).all()):
            raise ValueError(
                f"sg.{name} is per-neuron ({t.numel()} different values), but {library} takes one "
                f"surrogate per layer: a per-neuron {name} cannot be expressed"
            )
        values.append(float(t[0]))
    return values[0], values[1]


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= PEER_RTOL * max(abs(a), abs(b))


def _refuse(
    library: str, native: str, rule: str, sg: SurrogateGradient, d: float, s: float, accepted: str
) -> ValueError:
    return ValueError(
        f"{library}'s {native} {rule}: {sg.shape} with dampening {d:.6g}, sharpness {s:.6g} cannot be "
        f"expressed (accepted: {accepted})"
    )


def snntorch_params(sg: SurrogateGradient) -> tuple[str, dict[str, float]]:
    """The ``snntorch.surrogate`` factory and arguments whose derivative is ``sg`` (snnTorch not needed).

    fast-sigmoid with dampening 1 -> ``fast_sigmoid(slope=2 sharpness)``; sigmoid and arctan with dampening ==
    sharpness (unit area) -> ``sigmoid(slope=4 sharpness)``, ``atan(alpha=2 sharpness)``. Anything else:
    ValueError naming what snnTorch 1.0 cannot express.
    """
    d, s = _scalar_params(sg, "snnTorch")
    if sg.shape == "fast-sigmoid":
        if not _tied(d, 1.0):
            raise _refuse("snnTorch", "fast_sigmoid", "has a fixed peak of 1", sg, d, s, "dampening 1, any sharpness")
        return "fast_sigmoid", {"slope": 2.0 * s}
    if sg.shape in ("sigmoid", "arctan"):
        native, (arg, scale) = {"sigmoid": ("sigmoid", ("slope", 4.0)), "arctan": ("atan", ("alpha", 2.0))}[sg.shape]
        if not _tied(d, s):
            raise _refuse(
                "snnTorch", native, "has unit area (its peak is tied to its width)", sg, d, s, "dampening == sharpness"
            )
        return native, {arg: scale * s}
    raise ValueError(
        f"snnTorch 1.0 has no {sg.shape} surrogate (sg.shape accepted: fast-sigmoid with dampening 1; "
        "sigmoid or arctan with dampening == sharpness)"
    )


def to_snntorch(sg: SurrogateGradient) -> Callable[[Tensor], Tensor]:
    """A native snnTorch surrogate (``snntorch.surrogate.fast_sigmoid/sigmoid/atan``) whose derivative is
    ``dampening * f(sharpness x)``, for a ``spike_grad=`` argument; the rules are ``snntorch_params``'."""
    name, kwargs = snntorch_params(sg)
    from snntorch import surrogate as snn_surrogate

    return getattr(snn_surrogate, name)(**kwargs)


def to_norse(sg: SurrogateGradient) -> tuple[str, float]:
    """Norse 1.1's ``(method, alpha)`` (``LIFParameters(method=..., alpha=...)``) whose derivative is ``sg``.

    fast-sigmoid with dampening 1 and sharpness 1/2 -> ``("super", 100.0)`` (Norse 1.1's SuperSpike ignores
    alpha; 100 is its default); triangular with sharpness 1 -> ``("triangle", dampening)``; sigmoid with
    dampening 1 -> ``("tanh", 2 sharpness)``; gaussian with dampening 2/sqrt(pi) -> ``("heavi_erfc",
    sqrt(pi) sharpness)``. Anything else: ValueError naming what Norse cannot express.
    """
    d, s = _scalar_params(sg, "Norse")
    if sg.shape == "fast-sigmoid":
        if not (_tied(d, 1.0) and _tied(s, 0.5)):
            raise _refuse(
                "Norse",
                "super (SuperSpike)",
                "computes 1/(|x|+1)^2 whatever alpha",
                sg,
                d,
                s,
                "dampening 1, sharpness 0.5",
            )
        return "super", 100.0
    if sg.shape == "triangular":
        if not _tied(s, 1.0):
            raise _refuse("Norse", "triangle", "has a fixed width of 1", sg, d, s, "sharpness 1, any dampening")
        return "triangle", d
    if sg.shape == "sigmoid":
        if not _tied(d, 1.0):
            raise _refuse("Norse", "tanh", "has a fixed peak of 1", sg, d, s, "dampening 1, any sharpness")
        return "tanh", 2.0 * s
    if sg.shape == "gaussian":
        if not _tied(d, _ERFC_PEAK):
            raise _refuse(
                "Norse",
                "heavi_erfc",
                f"has a fixed peak of 2/sqrt(pi) = {_ERFC_PEAK:.6g}",
                sg,
                d,
                s,
                "dampening 2/sqrt(pi), any sharpness",
            )
        return "heavi_erfc", _SQRT_PI * s
    raise ValueError(
        f"Norse 1.1 has no {sg.shape} surrogate (sg.shape accepted: fast-sigmoid with dampening 1 and "
        "sharpness 0.5; triangular with sharpness 1; sigmoid with dampening 1; gaussian with dampening "
        "2/sqrt(pi))"
    )


def spikingjelly_params(sg: SurrogateGradient) -> tuple[str, dict[str, float]]:
    """The ``spikingjelly.activation_based.surrogate`` class and arguments whose derivative is ``sg``
    (SpikingJelly not needed).

    Every shape with dampening == sharpness (unit area): Sigmoid(4s), ATan(2s), SoftSign(2s) (fast-sigmoid),
    PiecewiseExp(2s), Erf(sqrt(pi) s), PiecewiseQuadratic(s) (triangular), Rect(s); also fast-sigmoid with
    sharpness 1/2 and any dampening d -> SuperSpike(d); q-pseudospike with dampening = sharpness = 1 ->
    QPseudoSpike(tail). Where two fit (fast-sigmoid, d = s = 1/2) SoftSign is chosen. Anything else:
    ValueError naming what SpikingJelly cannot express.
    """
    d, s = _scalar_params(sg, "SpikingJelly")
    if sg.shape == "q-pseudospike":
        if not (_tied(d, 1.0) and _tied(s, 1.0)):
            raise _refuse(
                "SpikingJelly",
                "QPseudoSpike",
                "has peak 1 and unit area (alpha is the tail q)",
                sg,
                d,
                s,
                "dampening 1, sharpness 1, any tail",
            )
        return "QPseudoSpike", {"alpha": float(sg.tail)}
    native, scale = {
        "sigmoid": ("Sigmoid", 4.0),
        "arctan": ("ATan", 2.0),
        "fast-sigmoid": ("SoftSign", 2.0),
        "exponential": ("PiecewiseExp", 2.0),
        "gaussian": ("Erf", _SQRT_PI),
        "triangular": ("PiecewiseQuadratic", 1.0),
        "rectangular": ("Rect", 1.0),
    }[sg.shape]
    if _tied(d, s):
        return native, {"alpha": scale * s}
    if sg.shape == "fast-sigmoid":
        if _tied(s, 0.5):
            return "SuperSpike", {"alpha": d}
        raise _refuse(
            "SpikingJelly",
            "SoftSign and SuperSpike",
            "have unit area or a fixed width of 1",
            sg,
            d,
            s,
            "dampening == sharpness, or sharpness 0.5",
        )
    raise _refuse(
        "SpikingJelly", native, "has unit area (its peak is tied to its width)", sg, d, s, "dampening == sharpness"
    )


def to_spikingjelly(sg: SurrogateGradient) -> nn.Module:
    """A native SpikingJelly surrogate module (``surrogate_function=``) whose derivative is ``sg``; the
    rules are ``spikingjelly_params``'."""
    name, kwargs = spikingjelly_params(sg)
    from spikingjelly.activation_based import surrogate as sj_surrogate

    return getattr(sj_surrogate, name)(**kwargs)


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
