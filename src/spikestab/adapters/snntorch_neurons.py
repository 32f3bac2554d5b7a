"""snnTorch's ``Leaky``, ``RLeaky``, ``Synaptic`` and ``RSynaptic`` for the stability engine.

snnTorch keeps the threshold in the tensor ``threshold`` (a buffer, or a parameter with
``learn_threshold``), the SG in the callable ``spike_grad`` (``snntorch.surrogate.atan(alpha=2)`` by
default) and the membrane decay in ``beta``; the time loop is the user's (``spk, mem = lif(cur, mem)``),
or the state lives in the module (``init_hidden=True``). Every forward call is one time step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from torch import Tensor, nn

from ..surrogate import SurrogateGradient, from_snntorch, to_snntorch
from .base import PeerNeurons, PeerSurrogate, Tap, set_tensor_value, tap_calls

__all__ = ["SnnTorchNeurons"]


def read_snntorch_sg(fn: Any) -> SurrogateGradient | None:
    """The spikestab SG equal to the snnTorch SG ``fn`` (one ``snntorch.surrogate`` made that
    ``from_snntorch`` reads, or an SG spikestab installed), else None."""
    if isinstance(fn, PeerSurrogate):
        return fn.sg.with_params()
    try:
        return from_snntorch(fn)
    except (ValueError, TypeError):
        return None


class SnnTorchNeurons(PeerNeurons):
    """One snnTorch neuron module (one of ``CLASSES``)."""

    CLASSES = ("Leaky", "RLeaky", "Synaptic", "RSynaptic")  # the classes this adapter takes
    library = "snntorch"

    @property
    def reset(self) -> str:
        return str(self.module.reset_mechanism)

    def threshold(self) -> Tensor:
        return self.module.threshold.detach().float()

    def set_threshold(self, value: float) -> None:
        set_tensor_value(self.module, "threshold", value)

    def surrogate(self) -> SurrogateGradient | None:
        return read_snntorch_sg(self.module.spike_grad)

    def install(self, sg: SurrogateGradient) -> str:
        try:
            native = to_snntorch(sg)
        except ValueError as why:
            self._set_spike_grad(PeerSurrogate(sg))
            return f"spikestab's SG ({sg.extra_repr()}) as spike_grad: {why}"
        self._set_spike_grad(native)
        return f"snnTorch's own SG: {native.__qualname__.split('.')[0]} ({sg.extra_repr()})"

    def _set_spike_grad(self, fn: Any) -> None:
        """snnTorch's SGs are plain functions: keep ``spike_grad`` a plain attribute whatever is installed
        (a :class:`PeerSurrogate` registered as a submodule could not be replaced by a function again)."""
        self.module._modules.pop("spike_grad", None)
        object.__setattr__(self.module, "spike_grad", fn)

    def tapped(self, tap: Tap) -> AbstractContextManager[None]:
        # one call is one step: spikes first in the output (also with init_hidden), the membrane in ``mem``
        return tap_calls(self.module, tap, lambda m, out: (out[0] if isinstance(out, tuple) else out, m.mem, False))

    def reset_state(self, model: nn.Module) -> None:
        """Zero the state an ``init_hidden=True`` module keeps between calls."""
        self.module.reset_mem()

    def snapshot(self) -> Any:
        return self.module.spike_grad, self.module.threshold.detach().clone()

    def restore(self, snap: Any) -> None:
        spike_grad, threshold = snap
        self._set_spike_grad(spike_grad)
        if isinstance(self.module.threshold, nn.Parameter):
            self.module.threshold.data = threshold
        else:
            self.module.threshold = threshold
