"""What the stability engine needs from one spiking module of another library (:class:`PeerNeurons`), the
recorder of one forward pass (:class:`Tap`) and spikestab's SG in the form a peer library calls
(:class:`PeerSurrogate`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient

__all__ = ["PeerNeurons", "PeerSurrogate", "Tap", "set_tensor_value", "tap_calls"]


class PeerSurrogate(nn.Module):
    """spikestab's surrogate gradient in the form snnTorch, Norse and SpikingJelly call theirs: ``spikes =
    fn(v - threshold)``. Installed where the library's own SG cannot express the chosen shape, dampening
    and sharpness. It holds no parameters or buffers, so the model's ``state_dict`` keeps its keys; the
    SG is stored beside it (``sg``) and moves to the input's device on first use there."""

    sg: SurrogateGradient

    def __init__(self, sg: SurrogateGradient) -> None:
        super().__init__()
        if sg.dampening.numel() != 1 or sg.sharpness.numel() != 1:
            raise ValueError(
                "a peer library's neurons take one SG for all neurons: dampening and sharpness must be scalars"
            )
        object.__setattr__(self, "sg", sg.with_params())  # not a submodule: no state_dict entries

    def forward(self, v: Tensor) -> Tensor:
        if self.sg.dampening.device != v.device:
            object.__setattr__(self, "sg", self.sg.to(v.device))
        return self.sg(v)

    def extra_repr(self) -> str:
        return self.sg.extra_repr()


class Tap:
    """Records one spiking module during one forward pass of the whole model: its spikes at every step
    and its voltage after the last step, and (``perturb=True``) adds a zero tensor that requires a
    gradient to its input at every step, so that the gradient of a loss with respect to those tensors
    is the gradient with respect to the module's state along the whole sequence, through every path of
    the user's own forward (their recurrence and loop included)."""

    def __init__(self, perturb: bool = False) -> None:
        self.perturb = perturb
        self.spikes: list[Tensor] = []
        self.perturbations: list[Tensor] = []
        self.voltage: Tensor | None = None
        self.sequence = False

    def input(self, x: Tensor) -> Tensor:
        """``x`` plus a recorded zero perturbation (when perturbing), else ``x`` itself."""
        if not self.perturb:
            return x
        e = torch.zeros_like(x, requires_grad=True)
        self.perturbations.append(e)
        return x + e

    def output(self, spikes: Tensor, voltage: Tensor | None, sequence: bool) -> None:
        """Record one call's spikes ([B, ...] for one step, [T, B, ...] for a sequence) and voltage."""
        self.sequence = sequence
        self.spikes.append(spikes.detach())
        self.voltage = voltage

    def z(self) -> Tensor:
        """The spikes [T, B, F] (features flattened)."""
        if not self.spikes:
            raise RuntimeError("the module was not called")
        if self.sequence:
            z = torch.cat(self.spikes)
            return z.reshape(z.shape[0], z.shape[1], -1)
        return torch.stack([s.reshape(s.shape[0], -1) for s in self.spikes])


class PeerNeurons(ABC):
    """One spiking module of a peer library as the stability engine sees it: its threshold, its SG and a
    way to record it (:meth:`tapped`). Subclasses adapt one library's neuron classes."""

    CLASSES: tuple[str, ...] = ()  # the library's neuron classes the subclass adapts
    library = ""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module: Any = module  # a peer library's module: its attributes are that library's

    @property
    def kind(self) -> str:
        return f"{self.library}.{type(self.module).__name__}"

    @property
    @abstractmethod
    def reset(self) -> str:
        """The reset rule, in spikestab's words."""

    @abstractmethod
    def threshold(self) -> Tensor:
        """The current threshold (a float tensor, scalar or per neuron)."""

    @abstractmethod
    def set_threshold(self, value: float) -> None:
        """Set every neuron's threshold to ``value``, in the library's own parameter."""

    @abstractmethod
    def surrogate(self) -> SurrogateGradient | None:
        """The module's SG as a spikestab SG, or None when the library's SG is not one spikestab knows."""

    @abstractmethod
    def install(self, sg: SurrogateGradient) -> str:
        """Install ``sg`` in the module: the library's own SG object where it can express it, else
        :class:`PeerSurrogate`. Returns what was installed, in words."""

    @abstractmethod
    def tapped(self, tap: Tap) -> AbstractContextManager[None]:
        """While active, every call of the module reports to ``tap``."""

    @abstractmethod
    def reset_state(self, model: nn.Module) -> None:
        """Clear the state the module (and, for libraries that keep state in modules, ``model``) keeps
        between forward passes, as the library's own training loop does before each batch."""

    @abstractmethod
    def snapshot(self) -> Any:
        """What :meth:`restore` needs to undo every change the engine can make outside the state_dict."""

    @abstractmethod
    def restore(self, snap: Any) -> None:
        """Undo what :meth:`snapshot` recorded."""


def set_tensor_value(module: nn.Module, name: str, value: float) -> None:
    """Set the tensor attribute ``name`` of ``module`` (a buffer or a parameter, scalar or per neuron) to
    ``value`` everywhere, without sharing storage with any other module: a parameter keeps its identity
    (an optimiser holding it still sees it), a buffer is replaced."""
    t = getattr(module, name)
    new = torch.full_like(t.detach(), value)
    if isinstance(t, nn.Parameter):
        t.data = new
    else:
        setattr(module, name, new)


@contextmanager
def tap_calls(
    module: nn.Module, tap: Tap, read: Callable[[Any, Any], tuple[Tensor, Tensor | None, bool]]
) -> Iterator[None]:
    """While active, every call of ``module`` reports to ``tap`` through forward hooks: its first
    positional argument (the input current) passes through ``tap.input``, and ``read(module, output)``
    gives the call's (spikes, voltage, whether the call was a whole sequence) for ``tap.output``."""

    def before(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (tap.input(args[0]), *args[1:]), kwargs

    def after(mod: nn.Module, args: tuple, out: Any) -> None:
        tap.output(*read(mod, out))

    handles = [module.register_forward_pre_hook(before, with_kwargs=True), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
