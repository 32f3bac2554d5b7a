"""LIF/ALIF neurons (functional steps, one-step cells, whole-sequence layers) and the spiking LSTM."""

from ..dynamics import RESETS, Dynamics, NeuronState, step
from .layers import ALIF, LIF, ALIFCell, LIFCell, SpikingNeurons, require_spiking_layers, spiking_layers
from .slstm import SLSTM, SLSTMState

__all__ = [
    "RESETS",
    "Dynamics",
    "NeuronState",
    "step",
    "LIF",
    "ALIF",
    "LIFCell",
    "ALIFCell",
    "SpikingNeurons",
    "spiking_layers",
    "require_spiking_layers",
    "SLSTM",
    "SLSTMState",
]
