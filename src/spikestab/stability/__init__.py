"""Stability engine: conditions I-IV (method.md section 3), their measurement on built networks, and
``stabilize`` which applies them layer by layer and reports target, choice, feasibility and outcome."""

from .conditions import ConditionResult, TransitionTerms, condition_i, condition_ii, condition_iii, condition_iv
from .measure import (
    measure_firing_rate,
    measure_gradient_growth,
    measure_jacobian,
    measure_layers,
    measure_variance_ratio,
    measure_worst_case_gain,
)
from .report import LayerReport, StabilityReport
from .stabilize import CONDITIONS, MODES, stabilize

__all__ = [
    "CONDITIONS", "MODES", "ConditionResult", "TransitionTerms", "condition_i", "condition_ii", "condition_iii",
    "condition_iv", "measure_firing_rate", "measure_gradient_growth", "measure_jacobian", "measure_layers",
    "measure_variance_ratio", "measure_worst_case_gain", "LayerReport", "StabilityReport", "stabilize",
]
