"""The functional LIF/ALIF core under its ``spikestab.neurons.functional`` name: the types and the step
are defined in :mod:`spikestab.dynamics` (a leaf module the kernels import without importing the neuron
modules) and importable from both places."""

from ..dynamics import (
    RESETS,
    Dynamics,
    NeuronState,
    check_reset,
    decay_from,
    initial_state,
    step,
    tau_from_alpha,
    time_constant_from,
)

__all__ = [
    "RESETS",
    "Dynamics",
    "NeuronState",
    "check_reset",
    "decay_from",
    "initial_state",
    "step",
    "tau_from_alpha",
    "time_constant_from",
]
