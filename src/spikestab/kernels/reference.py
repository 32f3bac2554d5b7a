"""Reference sequence kernel: a plain autograd loop over time steps (the ground truth in tests)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..dynamics import Dynamics, NeuronState, step


def run_reference(
    current: Tensor, weight_hh: Tensor | None, dyn: Dynamics, state: NeuronState, return_voltage: bool
) -> tuple[Tensor, Tensor | None, NeuronState]:
    """Run ``current`` [T, B, H] (input projection plus bias) through the layer from ``state``.

    Returns spikes [T, B, H], voltages [T, B, H] (or None) and the final state.
    """
    spikes, volts = [], []
    for t in range(current.shape[0]):
        state = step(current[t], state, weight_hh, dyn)
        spikes.append(state.z)
        if return_voltage:
            volts.append(state.v)
    z = torch.stack(spikes)
    v = torch.stack(volts) if return_voltage else None
    return z, v, state
