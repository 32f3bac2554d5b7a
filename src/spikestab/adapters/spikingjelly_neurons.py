"""SpikingJelly's ``neuron.LIFNode`` for the stability engine, in one-step (``step_mode="s"``, the user's
loop or ``layer.LinearRecurrentContainer``) and multi-step (``step_mode="m"``, input [T, B, ...]) mode.

SpikingJelly keeps the threshold in the number ``v_threshold``, the SG in the module
``surrogate_function`` (``surrogate.Sigmoid(alpha=4)`` by default, one ``alpha`` for height and width),
the decay in ``tau`` (alpha = 1 - 1/tau), and the state in the module: ``functional.reset_net(model)``
clears it between batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient, from_spikingjelly, to_spikingjelly
from .base import PeerNeurons, PeerSurrogate, Tap

__all__ = ["SpikingJellyNeurons", "CLASSES"]

CLASSES = ("LIFNode",)


class SpikingJellyNeurons(PeerNeurons):
    """One SpikingJelly ``LIFNode``."""

    library = "spikingjelly"

    @property
    def reset(self) -> str:
        v_reset = self.module.v_reset
        return "subtract" if v_reset is None else f"to v_reset={v_reset:g}"

    def threshold(self) -> Tensor:
        return torch.as_tensor(float(self.module.v_threshold))

    def set_threshold(self, value: float) -> None:
        self.module.v_threshold = float(value)

    def surrogate(self) -> SurrogateGradient | None:
        fn = self.module.surrogate_function
        if isinstance(fn, PeerSurrogate):
            return fn.sg.with_params()
        try:
            return from_spikingjelly(fn)
        except (ValueError, AttributeError, TypeError):
            return None

    def install(self, sg: SurrogateGradient) -> str:
        try:
            self.module.surrogate_function = to_spikingjelly(sg)
            return f"SpikingJelly's own SG: {self.module.surrogate_function!r}"
        except ValueError as why:
            self.module.surrogate_function = PeerSurrogate(sg)
            return f"spikestab's SG ({sg.extra_repr()}) as surrogate_function: {why}"


    @contextmanager
    def tapped(self, tap: Tap) -> Iterator[None]:
        def before(module: nn.Module, args: tuple) -> tuple:
            return (tap.input(args[0]), *args[1:])

        def after(module: Any, args: tuple, out: Tensor) -> None:
            tap.output(out, module.v, sequence=module.step_mode == "m")

        handles = [self.module.register_forward_pre_hook(before), self.module.register_forward_hook(after)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def reset_state(self, model: nn.Module) -> None:
        from spikingjelly.activation_based import functional

        functional.reset_net(model)

    def snapshot(self) -> Any:
        return self.module.v_threshold, self.module.surrogate_function

    def restore(self, snap: Any) -> None:
        self.module.v_threshold, self.module.surrogate_function = snap
