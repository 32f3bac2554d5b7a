"""SpikingJelly's ``neuron.LIFNode`` for the stability engine, in one-step (``step_mode="s"``, the user's
loop or ``layer.LinearRecurrentContainer``) and multi-step (``step_mode="m"``, input [T, B, ...]) mode.

SpikingJelly keeps the threshold in the number ``v_threshold``, the SG in the module
``surrogate_function`` (``surrogate.Sigmoid(alpha=4)`` by default, one ``alpha`` for height and width),
the decay in ``tau`` (alpha = 1 - 1/tau), and the state in the module: ``functional.reset_net(model)``
clears it between batches.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient, from_spikingjelly, to_spikingjelly
from .base import PeerNeurons, PeerSurrogate, Tap, tap_calls

__all__ = ["SpikingJellyNeurons"]


class SpikingJellyNeurons(PeerNeurons):
    """One SpikingJelly ``LIFNode``."""

    CLASSES = ("LIFNode",)  # the classes this adapter takes
    library = "spikingjelly"

    @property
    def reset(self) -> str:
        v_reset = self.module.v_reset
        return "subtract" if v_reset is None else f"to v_reset={v_reset:g}"

    def threshold(self) -> Tensor:
        """SpikingJelly keeps the threshold as a Python number: a 0-dim tensor on the host."""
        return torch.as_tensor(float(self.module.v_threshold), device="cpu")

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

    def tapped(self, tap: Tap) -> AbstractContextManager[None]:
        # the output is the spikes, the membrane after the call is ``v``; multi-step calls take [T, B, ...]
        return tap_calls(self.module, tap, lambda m, out: (out, m.v, m.step_mode == "m"))

    def reset_state(self, model: nn.Module) -> None:
        from spikingjelly.activation_based import functional

        functional.reset_net(model)

    def snapshot(self) -> Any:
        return self.module.v_threshold, self.module.surrogate_function

    def restore(self, snap: Any) -> None:
        self.module.v_threshold, self.module.surrogate_function = snap
