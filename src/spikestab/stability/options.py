"""What one ``stabilize`` call carries to its per-layer steps: the settings (:class:`StabilizeOptions`)
and the clock (:class:`Timings`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .drive import GROWTH_RATIO

__all__ = ["StabilizeOptions", "Timings"]


@dataclass(frozen=True)
class StabilizeOptions:
    """The keyword settings of :func:`~spikestab.stability.stabilize` (documented there), together."""

    mode: str = "measured"
    rate: float = 0.5
    growth_ratio: float = GROWTH_RATIO
    solve_for: str = "sharpness"
    iii_variant: str | None = None  # None: "c" in paper mode, "bounded" in measured mode
    rate_tol: float = 0.01
    ratio_tol: float = 0.1
    max_rounds: int = 8
    solve_batch: int = 8
    measure: bool = True
    jacobian_steps: int = 4
    sparse_rate: float | None = None  # D's target in the recipe's sparse regime (None: regime.sparse_target)

    @property
    def variant(self) -> str:
        """Condition III's variant in effect."""
        return self.iii_variant or ("c" if self.mode == "paper" else "bounded")


@dataclass
class Timings:
    """Seconds one ``stabilize`` call spent, by part (``StabilityReport.timings``): ``apply_s`` applying
    the conditions, including the simulations their measured-mode root finds need; ``conditions_s``
    inside the condition functions themselves (part of ``apply_s``); ``capture_s`` capturing each layer's
    input; ``measure_s`` the verification measurements."""

    apply_s: float = 0.0
    conditions_s: float = 0.0
    capture_s: float = 0.0
    measure_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to the part ``name`` (e.g. "conditions_s")."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - t0)

    def as_dict(self) -> dict[str, float]:
        """The parts plus ``total_s``, the time since this object was made."""
        return {
            "total_s": time.perf_counter() - self.start,
            "apply_s": self.apply_s,
            "conditions_s": self.conditions_s,
            "capture_s": self.capture_s,
            "measure_s": self.measure_s,
        }
