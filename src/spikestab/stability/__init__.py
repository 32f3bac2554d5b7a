"""Stability engine: the paper's conditions I-IV, spikestab's measured conditions D (threshold for the
initial rate) and G (dampening for the BPTT growth), their measurement on built networks, and
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
from .drive import condition_d, condition_g
from .stabilize import CONDITIONS, MODES, PAPER_CONDITIONS, RECIPE, resolve_conditions, stabilize

__all__ = [
    "CONDITIONS", "PAPER_CONDITIONS", "RECIPE", "resolve_conditions", "condition_d", "condition_g", "MODES", "ConditionResult", "TransitionTerms", "condition_i", "condition_ii", "condition_iii",
    "condition_iv", "measure_firing_rate", "measure_gradient_growth", "measure_jacobian", "measure_layers",
    "measure_variance_ratio", "measure_worst_case_gain", "LayerReport", "StabilityReport", "stabilize",
]
