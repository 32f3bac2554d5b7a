"""spikestab: spiking neural networks whose surrogate gradient and initialisation come from
stability conditions (Herranz-Celotti and Rouat, "Stabilizing Spiking Neuron Training")."""

from . import surrogate
from .models import SNNClassifier, SNNConfig, SNNLanguageModel
from .neurons import ALIF, LIF, SLSTM, ALIFCell, LIFCell, NeuronState, SLSTMState
from .surrogate import SurrogateGradient

__all__ = [
    "surrogate",
    "SurrogateGradient",
    "LIF",
    "ALIF",
    "LIFCell",
    "ALIFCell",
    "NeuronState",
    "SLSTM",
    "SLSTMState",
    "SNNConfig",
    "SNNClassifier",
    "SNNLanguageModel",
]
__version__ = "0.1.0"
