"""DECOLLE's online training: a local loss per layer at every step after the burn-in, one optimiser update
per step, and the firing-rate control term of the paper's Table 1 (docs/extensions.md, "DECOLLE").

Local loss of layer l at step t: SmoothL1(y_l, one-hot target) (DECOLLE's default), plus, with a
:class:`RateControl`, lambda * |mean(s_l) - f| where f = f_from for epochs <= switch_epoch and f = f_to
after it (no term at all after the switch when f_to is not given). Accuracy: argmax of the readout summed
over the steps after the burn-in, per layer (the last layer's is the network's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import DecolleNet

__all__ = ["RateControl", "evaluate", "local_losses", "train_epoch"]


@dataclass(frozen=True)
class RateControl:
    """lambda * |mean rate - f_from| per layer up to ``switch_epoch`` (inclusive), lambda * |mean rate - f_to|
    after it when ``f_to`` is given, nothing otherwise. Epochs count from 0."""

    lmbda: float = 0.1
    f_from: float = 0.5
    switch_epoch: int = 5
    f_to: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.switch_epoch, int) or isinstance(self.switch_epoch, bool) or self.switch_epoch < 0:
            raise ValueError(f"switch_epoch must be an integer >= 0, got {self.switch_epoch!r}")
        if not (isinstance(self.lmbda, (int, float)) and math.isfinite(self.lmbda) and self.lmbda >= 0):
            raise ValueError(f"lmbda must be a finite number >= 0, got {self.lmbda!r}")
        for name in ("f_from", "f_to"):
            f = getattr(self, name)
            if f is not None and not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0):
                raise ValueError(f"{name} must be a firing rate in [0, 1], got {f!r}")

    def target(self, epoch: int) -> float | None:
        """The rate the term pulls towards in ``epoch``, or None (no term)."""
        return self.f_from if epoch <= self.switch_epoch else self.f_to

    def term(self, spikes: Tensor, epoch: int) -> Tensor | None:
        """lambda * |mean(spikes) - target| for one layer's output, or None after the switch without f_to."""
        f = self.target(epoch)
        return None if f is None else self.lmbda * (spikes.mean() - f).abs()


def local_losses(readouts: list[Tensor], target: Tensor) -> list[Tensor]:
    """SmoothL1 between every layer's readout [B, C] and the one-hot ``target`` [B, C]."""
    return [F.smooth_l1_loss(y, target) for y in readouts]


def _one_hot(labels: Tensor, n_classes: int, like: Tensor) -> Tensor:
    return F.one_hot(labels.long(), n_classes).to(like.dtype)


def train_epoch(
    net: DecolleNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    epoch: int,
    burn_in: int,
    rate_control: RateControl | None = None,
    online: bool = True,
) -> dict:
    """One epoch of DECOLLE training on ``batches`` of (x [T, B, ...], labels [B]). The first ``burn_in``
    steps only run the dynamics; after them every step's summed local losses (plus rate terms) are
    back-propagated and, ``online``, applied at once (otherwise accumulated and applied once per batch).
    Returns the mean local loss per layer, the mean rate term per layer and the mean rates."""
    n = len(net.layers)
    n_classes = net.n_classes
    sums = {"loss": [0.0] * n, "rate_term": [0.0] * n, "rate": [0.0] * n}
    count = 0
    net.train()
    for x, labels in batches:
        if x.shape[0] <= burn_in:
            raise ValueError(f"burn_in ({burn_in}) must be shorter than the sequences ({x.shape[0]} steps)")
        target = _one_hot(labels, n_classes, x)
        states = net.init_state(x[0])
        with torch.no_grad():
            for t in range(burn_in):
                states = net.step(x[t], states)[3]
        optimizer.zero_grad(set_to_none=True)
        for t in range(burn_in, x.shape[0]):
            spikes, readouts, _, states = net.step(x[t], states)
            losses = local_losses(readouts, target)
            total = sum(losses[1:], losses[0])  # one loss per layer: a net has at least one
            for i, s in enumerate(spikes):
                term = rate_control.term(s, epoch) if rate_control is not None else None
                if term is not None:
                    total = total + term
                    sums["rate_term"][i] += float(term.detach())
                sums["loss"][i] += float(losses[i].detach())
                sums["rate"][i] += float(s.detach().mean())
            total.backward()
            if online:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            count += 1
        if not online:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("batches is empty")
    return {k: [v / count for v in vals] for k, vals in sums.items()}


@torch.no_grad()
def evaluate(net: DecolleNet, batches: Iterable[tuple[Tensor, Tensor]], burn_in: int) -> dict:
    """Accuracy per layer (readouts summed over the steps after ``burn_in``), mean local loss and mean rate
    per layer."""
    n = len(net.layers)
    n_classes = net.n_classes
    correct, loss, rate = [0] * n, [0.0] * n, [0.0] * n
    examples = steps = 0
    net.eval()
    for x, labels in batches:
        target = _one_hot(labels, n_classes, x)
        states = net.init_state(x[0])
        acc = [torch.zeros_like(target) for _ in range(n)]
        for t in range(x.shape[0]):
            spikes, readouts, _, states = net.step(x[t], states)
            if t < burn_in:
                continue
            for i, (s, y, ls) in enumerate(zip(spikes, readouts, local_losses(readouts, target))):
                acc[i] += y
                loss[i] += float(ls) * len(labels)
                rate[i] += float(s.mean()) * len(labels)
            steps += len(labels)
        correct = [c + int((a.argmax(1) == labels).sum()) for c, a in zip(correct, acc)]
        examples += len(labels)
    if examples == 0:
        raise ValueError("batches is empty")
    return {
        "accuracy": [c / examples for c in correct],
        "loss": [v / steps for v in loss],
        "rate": [v / steps for v in rate],
    }
