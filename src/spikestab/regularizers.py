"""Firing-rate (sparsity) losses and the schedules that switch them in gradually (docs/theory.md, "Training").

Two loss variants, both on time-first spikes [T, B, N] of one layer:

- ``l1_rate``: per-example, per-neuron rate r_bn = mean_t z_tbn, loss = weight * mean_bn |r_bn - target|
  (the 2022 ``RateVoltageRegularization`` behind the paper's figures).
- ``l2_population``: per-step population rate p_t = mean_bn z_tbn, loss = weight * sum_t (p_t - target)^2
  (the HEAD in-cell version, summed over time steps as eager Keras does).

Schedules are plain callables ``schedule(epoch_float) -> float`` in [0, 1]; ``SparsityLoss`` combines a
variant, per-layer targets and weights and a schedule, and is usable from any training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "l1_rate",
    "l2_population",
    "LOSSES",
    "Schedule",
    "ConstantSchedule",
    "StepSchedule",
    "LinearRamp",
    "CosineRamp",
    "SCHEDULES",
    "make_schedule",
    "SparsityLoss",
    "parse_sparsity",
]


def _check_spikes(spikes: Tensor) -> None:
    if not isinstance(spikes, Tensor) or spikes.dim() != 3:
        shape = tuple(spikes.shape) if isinstance(spikes, Tensor) else type(spikes).__name__
        raise ValueError(f"spikes must be a time-first tensor [T, B, N], got {shape}")


def l1_rate(spikes: Tensor, target: float | Tensor = 0.0, weight: float = 1.0) -> Tensor:
    """weight * mean over examples and neurons of |mean_t z - target| (target: scalar or per neuron)."""
    _check_spikes(spikes)
    return weight * (spikes.mean(0) - target).abs().mean()


def l2_population(spikes: Tensor, target: float = 0.0, weight: float = 1.0) -> Tensor:
    """weight * sum over time of (population rate at step t - target)^2."""
    _check_spikes(spikes)
    return weight * ((spikes.mean(dim=(1, 2)) - target) ** 2).sum()


LOSSES: dict[str, Callable[..., Tensor]] = {"l1_rate": l1_rate, "l2_population": l2_population}


def _check_fraction(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a fraction of training in [0, 1], got {value!r}")
    return float(value)


def _check_epochs(total_epochs: float) -> float:
    if not (isinstance(total_epochs, (int, float)) and math.isfinite(total_epochs) and total_epochs > 0):
        raise ValueError(f"total_epochs must be > 0, got {total_epochs!r}")
    return float(total_epochs)


class Schedule:
    """s(epoch) in [0, 1]; ``epoch`` is fractional (epoch index + fraction of its batches done)."""

    name = "schedule"

    def __call__(self, epoch: float) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items()}}


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """s = value at every epoch."""

    value: float = 1.0
    name = "constant"

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """s = 0 before ``switch_epoch``, 1 from it on."""

    switch_epoch: float
    name = "step"

    def __call__(self, epoch: float) -> float:
        return 1.0 if epoch >= self.switch_epoch else 0.0


@dataclass(frozen=True)
class _Ramp(Schedule):
    """0 before start*E, 1 after end*E, ``_shape(fraction)`` in between."""

    total_epochs: float
    start: float = 0.2
    end: float = 0.6

    def __post_init__(self) -> None:
        _check_epochs(self.total_epochs)
        _check_fraction("start", self.start)
        _check_fraction("end", self.end)
        if self.end <= self.start:
            raise ValueError(f"end must be > start, got start={self.start} end={self.end}")

    def _shape(self, frac: float) -> float:
        raise NotImplementedError

    def __call__(self, epoch: float) -> float:
        lo, hi = self.start * self.total_epochs, self.end * self.total_epochs
        if epoch < lo:
            return 0.0
        if epoch > hi:
            return 1.0
        return self._shape((epoch - lo) / (hi - lo))


class LinearRamp(_Ramp):
    """The linear schedule s(e) of docs/theory.md, "Training": 0 for e < E/5, (e - E/5)/(3E/5 - E/5) in
    between, 1 for e > 3E/5."""

    name = "linear"

    def _shape(self, frac: float) -> float:
        return frac


class CosineRamp(_Ramp):
    """Half-cosine ramp (1 - cos(pi f))/2 between the same two fractions: smooth at both ends."""

    name = "cosine"

    def _shape(self, frac: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * frac))


SCHEDULES = ("constant", "step", "linear", "cosine")


def make_schedule(name: str, total_epochs: float, start: float = 0.2, end: float = 0.6) -> Schedule:
    """Build a schedule by name; ``step`` switches at start*E, the ramps run from start*E to end*E."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")
    total = _check_epochs(total_epochs)
    if name == "constant":
        return ConstantSchedule()
    if name == "step":
        return StepSchedule(_check_fraction("start", start) * total)
    return (LinearRamp if name == "linear" else CosineRamp)(total, start, end)


def _per_layer(name: str, values: float | Sequence[float], n_layers: int) -> list[float]:
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * n_layers
    if len(vals) != n_layers:
        raise ValueError(f"{name} must give one value or one per layer ({n_layers}), got {len(vals)}")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError(f"{name} must be finite and >= 0, got {vals}")
    return vals


class SparsityLoss:
    """``schedule(epoch) * sum over layers of LOSSES[variant](spikes_l, target_l, weight_l)``."""

    def __init__(
        self,
        variant: str,
        targets: float | Sequence[float],
        weights: float | Sequence[float] = 1.0,
        schedule: Schedule | None = None,
        n_layers: int = 1,
    ) -> None:
        if variant not in LOSSES:
            raise ValueError(f"sparsity variant must be one of {sorted(LOSSES)}, got {variant!r}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1 (the layers whose spikes are penalised), got {n_layers}")
        self.variant = variant
        self.targets = _per_layer("targets", targets, n_layers)
        if any(t > 1 for t in self.targets):
            raise ValueError(f"targets are firing rates in [0, 1], got {self.targets}")
        self.weights = _per_layer("weights", weights, n_layers)
        self.schedule = schedule if schedule is not None else ConstantSchedule()

    def __call__(self, spikes: Sequence[Tensor], epoch: float) -> tuple[Tensor, float]:
        """-> (loss, schedule value s); the loss is an exact zero tensor while s = 0."""
        if len(spikes) != len(self.targets):
            raise ValueError(f"spikes must hold one tensor per layer ({len(self.targets)}), got {len(spikes)}")
        s = float(self.schedule(epoch))
        fn = LOSSES[self.variant]
        losses = [fn(z, t, w) for z, t, w in zip(spikes, self.targets, self.weights)]
        return s * sum(losses[1:], losses[0]), s

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "targets": self.targets,
            "weights": self.weights,
            "schedule": self.schedule.to_dict(),
        }


def parse_sparsity(spec: str, n_layers: int, total_epochs: float) -> SparsityLoss:
    """``variant:target[:schedule[:weight]]``, e.g. ``l1_rate:0.01:linear:0.8``; target and weight may be
    per layer, comma-separated (``l1_rate:0.05,0.01``). Defaults: schedule linear, weight 1."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"sparsity must look like 'variant:target[:schedule[:weight]]', got {spec!r}")
    variant, target = parts[0], parts[1]
    schedule = parts[2] if len(parts) > 2 else "linear"
    weight = parts[3] if len(parts) > 3 else "1"
    try:
        targets = [float(t) for t in target.split(",")]
        weights = [float(w) for w in weight.split(",")]
    except ValueError:
        raise ValueError(f"sparsity target and weight must be numbers, got {spec!r}") from None
    return SparsityLoss(variant, targets, weights, make_schedule(schedule, total_epochs), n_layers)
