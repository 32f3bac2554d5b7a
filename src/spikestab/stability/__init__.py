"""Stability engine: the paper's conditions I-IV, spikestab's measured conditions D (threshold for the
initial rate) and G (dampening for the BPTT growth), their measurement on built networks, and
``stabilize`` which applies them layer by layer and reports target, choice, feasibility and outcome.

Modules: ``conditions`` (I-IV on plain tensors), ``drive`` (D and G), ``measure`` (recording a layer
and the measured quantities), ``solvers`` (bracketed root finders), ``stabilize`` (the layer-by-layer
driver), ``report`` (the result objects). The theory is in docs/theory.md.
"""

from .conditions import (
    III_VARIANTS,
    SOLVE_FOR,
    ConditionResult,
    TransitionTerms,
    check_rate,
    condition_i,
    condition_ii,
    condition_iii,
    condition_iv,
)
from .drive import condition_d, condition_g
from .measure import (
    Trace,
    layer_input,
    measure_firing_rate,
    measure_gradient_growth,
    measure_jacobian,
    measure_layers,
    measure_variance_ratio,
    measure_worst_case_gain,
    record,
)
from .peer import apply_report
from .report import LayerReport, StabilityReport
from .solvers import RootResult, find_root, scan_root, solve_increasing
from .stabilize import CONDITIONS, MODES, PAPER_CONDITIONS, RECIPE, resolve_conditions, stabilize

__all__ = [
    "CONDITIONS",
    "III_VARIANTS",
    "MODES",
    "PAPER_CONDITIONS",
    "RECIPE",
    "SOLVE_FOR",
    "ConditionResult",
    "LayerReport",
    "RootResult",
    "StabilityReport",
    "Trace",
    "TransitionTerms",
    "apply_report",
    "check_rate",
    "condition_d",
    "condition_g",
    "condition_i",
    "condition_ii",
    "condition_iii",
    "condition_iv",
    "find_root",
    "layer_input",
    "measure_firing_rate",
    "measure_gradient_growth",
    "measure_jacobian",
    "measure_layers",
    "measure_variance_ratio",
    "measure_worst_case_gain",
    "record",
    "resolve_conditions",
    "scan_root",
    "solve_increasing",
    "stabilize",
]
