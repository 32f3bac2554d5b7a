"""Norse's LIF and adaptive LIF (LSNN) modules for the stability engine: ``LIFCell``,
``LIFRecurrentCell``, ``LIF``, ``LIFRecurrent``, ``LSNNCell``, ``LSNNRecurrentCell``, ``LSNN``,
``LSNNRecurrent``.

Norse keeps every neuron parameter in the immutable tuple ``p`` (``v_th`` the threshold, ``tau_mem_inv``
the membrane rate, ``method`` and ``alpha`` the SG); one Euler step of length ``dt`` is the function
``activation`` that both the one-step cells and the whole-sequence modules call once per step with the
state as its second argument. Norse picks its SG by the name ``method`` with one width ``alpha`` and a
fixed height; a dampening those names cannot express is installed as a :class:`PeerSurrogate` in the
``method`` slot, which :func:`route_norse_threshold` teaches Norse's threshold function to call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient, from_norse, to_norse
from .base import PeerNeurons, PeerSurrogate, Tap

__all__ = ["NorseNeurons", "route_norse_threshold"]


def route_norse_threshold() -> None:
    """Make Norse's LIF and LSNN steps call a :class:`PeerSurrogate` found in ``p.method``; every named
    method behaves exactly as before. Idempotent."""
    from norse.torch.functional import lif, lsnn
    from norse.torch.functional import threshold as th

    if getattr(lif.threshold, "routes_peer_surrogates", False):
        return
    named = th.threshold

    def threshold(x: Tensor, method: Any, alpha: Any) -> Tensor:
        if isinstance(method, PeerSurrogate):
            return method(x)
        return named(x, method, alpha)

    threshold.routes_peer_surrogates = True  # type: ignore[attr-defined]
    lif.threshold = threshold
    lsnn.threshold = threshold


class NorseNeurons(PeerNeurons):
    """One Norse neuron module (one of ``CLASSES``)."""

    CLASSES = (
        "LIFCell",
        "LIFRecurrentCell",
        "LIF",
        "LIFRecurrent",
        "LSNNCell",
        "LSNNRecurrentCell",
        "LSNN",
        "LSNNRecurrent",
    )  # the classes this adapter takes
    library = "norse"

    @property
    def reset(self) -> str:
        return "to v_reset (gradient through the spike)"

    def threshold(self) -> Tensor:
        return torch.as_tensor(self.module.p.v_th).detach().float()

    def set_threshold(self, value: float) -> None:
        v_th = self.module.p.v_th
        if isinstance(v_th, nn.Parameter):
            v_th.data = torch.full_like(v_th.detach(), value)
        else:
            self.module.p = self.module.p._replace(v_th=torch.full_like(torch.as_tensor(v_th).float(), value))

    def surrogate(self) -> SurrogateGradient | None:
        p = self.module.p
        if isinstance(p.method, PeerSurrogate):
            return p.method.sg.with_params()
        try:
            return from_norse(p.method, float(p.alpha))
        except ValueError:
            return None

    def install(self, sg: SurrogateGradient) -> str:
        try:
            method, alpha = to_norse(sg)
        except ValueError as why:
            route_norse_threshold()
            self.module.p = self.module.p._replace(method=PeerSurrogate(sg))
            return f"spikestab's SG ({sg.extra_repr()}) in p.method: {why}"
        self.module.p = self.module.p._replace(method=method, alpha=torch.as_tensor(alpha))
        return f"Norse's own SG: method={method!r}, alpha={alpha:.4g} ({sg.extra_repr()})"

    @contextmanager
    def tapped(self, tap: Tap) -> Iterator[None]:
        step = self.module.activation

        def tapped_step(x: Tensor, state: Any, *rest: Any) -> Any:
            z, new = step(x, state._replace(v=tap.input(state.v)), *rest)
            tap.output(z, new.v, sequence=False)
            return z, new

        self.module.activation = tapped_step
        try:
            yield
        finally:
            self.module.activation = step

    def reset_state(self, model: nn.Module) -> None:
        """Nothing: Norse modules take their state as an argument and keep none."""

    def snapshot(self) -> Any:
        v_th = self.module.p.v_th
        return self.module.p, (v_th.detach().clone() if isinstance(v_th, nn.Parameter) else None)

    def restore(self, snap: Any) -> None:
        p, v_th = snap
        self.module.p = p
        if v_th is not None:
            p.v_th.data = v_th
