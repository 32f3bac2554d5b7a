"""The result of :func:`spikestab.stability.stabilize`: per layer, per condition, the target, the chosen
value, feasibility, the fallback used, and the targeted quantity measured on the built network."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field

from .conditions import ConditionResult, finite_or_none

__all__ = ["LayerReport", "StabilityReport", "rate_warning", "SILENT_RATE", "SATURATED_RATE"]

SILENT_RATE = 0.01  # an initial firing rate below this: the layer is nearly silent (no gradient reaches it)
SATURATED_RATE = 0.99  # above this: the layer is saturated (its spikes carry almost no information)


# what to do about a silent or saturated layer, by who set its threshold
RATE_ADVICE = {
    "open": "stabilize with the recommended recipe (conditions D,G; --conditions auto) or {move} the threshold",
    "D": "condition D set the threshold and did not reach its target rate here (its note says why)",
    "user": "{move} the threshold you set (--threshold), or leave it out so that the recipe's condition D chooses it",
}


def rate_warning(layer: int, rate: float, threshold_by: str = "open", target: float | None = None) -> str | None:
    """A warning for a layer whose initial firing rate is outside [SILENT_RATE, SATURATED_RATE], else None.
    ``threshold_by`` says who set the threshold, for the advice (``RATE_ADVICE``): "open" (no condition
    chose it), "D" (condition D did), "user" (kept as the user set it). ``target``: condition D's rate,
    where it chose the threshold; a start the recipe meant to be sparser than SILENT_RATE (a timing code's
    sparse start) is silent only below half of it."""
    silent = SILENT_RATE if target is None else min(SILENT_RATE, target / 2)
    if rate < silent:
        what = f"layer {layer} is nearly silent: initial firing rate {rate:.4g} < {silent:g}"
        move = "lower"
    elif rate > SATURATED_RATE:
        what = f"layer {layer} is saturated: initial firing rate {rate:.4g} > {SATURATED_RATE:g}"
        move = "raise"
    else:
        return None
    return f"{what}; {RATE_ADVICE[threshold_by].format(move=move)}"


MEASURED_BY = {
    "I": "firing_rate",
    "II": "variance_ratio",
    "III": "worst_case_gain",
    "IV": "mean_square_gain",
    "D": "firing_rate",
    "G": "growth_per_step",
}


@dataclass
class LayerReport:
    """One spiking layer: what each condition chose and what was measured afterwards."""

    index: int
    kind: str  # "LIF", "ALIF", ...
    width: int
    reset: str
    conditions: list[ConditionResult] = field(default_factory=list)
    measurements: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    name: str = ""  # the module's qualified name in the model (set for neurons of other libraries)

    def condition(self, name: str) -> ConditionResult:
        """The result of condition ``name`` ("I" .. "IV") on this layer."""
        for c in self.conditions:
            if c.condition == name:
                return c
        raise KeyError(f"condition {name!r} was not applied to layer {self.index}")

    def to_dict(self) -> dict:
        return {
            "layer": self.index,
            "name": self.name,
            "kind": self.kind,
            "width": self.width,
            "reset": self.reset,
            "conditions": {c.condition: c.to_dict() for c in self.conditions},
            "measurements": {k: finite_or_none(v) if isinstance(v, float) else v for k, v in self.measurements.items()},
            "notes": list(self.notes),
        }


@dataclass
class StabilityReport:
    """Per-layer results of ``stabilize``; ``str(report)`` is a table, ``to_dict()`` is JSON-able.

    ``timings`` (seconds): ``total_s``; ``apply_s`` applying the conditions, including the simulations
    their measured-mode root finds need; ``conditions_s`` inside the condition functions themselves;
    ``capture_s`` capturing each layer's input; ``measure_s`` the verification measurements.
    """

    mode: str
    conditions: tuple[str, ...]
    layers: list[LayerReport] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    # the recommended recipe's regime: {"regime": "dense" | "sparse", "measured": bool, ...what was measured}
    regime: dict | None = None

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "conditions": list(self.conditions),
            "regime": self.regime,
            "layers": [layer.to_dict() for layer in self.layers],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def write_json(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Write ``to_dict()`` (plus ``extra`` keys, e.g. the run's configuration) atomically: a temporary
        file in the same folder, then ``os.replace``."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".stability-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({**self.to_dict(), **(extra or {})}, fh, indent=2, allow_nan=False)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __str__(self) -> str:
        head = (
            f"{'layer':<14} {'cond':<4} {'parameter':<22} {'chosen':>10} {'quantity':<38} {'target':>7} "
            f"{'measured':>9} {'feasible':<8} fallback"
        )
        lines = [f"stability report ({self.mode} mode)"]
        if self.regime is not None:
            lines.append(self.regime["summary"])
        lines += [head, "-" * len(head)]
        for layer in self.layers:
            name = f"{layer.index} {layer.kind}-{layer.width}"
            if layer.name:
                lines.append(f"layer {layer.index}: {layer.name} ({layer.kind}, {layer.width} neurons)")
                name = f"{layer.index} {layer.name}"
            for c in layer.conditions:
                lines.append(
                    f"{name:<14} {c.condition:<4} {c.parameter:<22} {_fmt(c.chosen_mean):>10} {c.quantity:<38} "
                    f"{_fmt(c.target):>7} {_fmt(c.measured):>9} {'yes' if c.feasible else 'NO':<8} {c.fallback or ''}"
                )
                name = ""
            m = layer.measurements
            if m:
                lines.append(
                    f"{'':<14} measured: rate {_fmt(m.get('firing_rate'))}, var ratio {_fmt(m.get('variance_ratio'))}, "
                    f"worst-case gain {_fmt(m.get('worst_case_gain'))}, "
                    f"mean-square gain {_fmt(m.get('mean_square_gain'))}, "
                    f"BPTT growth/step {_fmt(m.get('growth_per_step'))} ({layer.reset} reset)"
                )
            for note in layer.notes:
                lines.append(f"{'':<14} note: {note}")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"
