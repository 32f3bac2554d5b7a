"""DECOLLE (deep continuous local learning): layers with P, Q, R traces and fixed random local readouts,
trained online with a local loss per layer and step, plus the paper's firing-rate control (Table 1)."""

from .layers import DecolleLayer, DecolleState, decolle_surrogate
from .network import DecolleNet, conv_decolle, dense_decolle
from .train import RateControl, evaluate, local_losses, train_epoch

__all__ = [
    "DecolleLayer",
    "DecolleNet",
    "DecolleState",
    "RateControl",
    "conv_decolle",
    "decolle_surrogate",
    "dense_decolle",
    "evaluate",
    "local_losses",
    "train_epoch",
]
