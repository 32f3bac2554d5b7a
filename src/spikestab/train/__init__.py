"""Training: TrainConfig, the Trainer (resumable run folders, non-finite handling), ``spikestab train``."""

from .config import TrainConfig, parse_layers
from .nonfinite import NonFiniteError
from .task import load_config_task, network_config
from .trainer import Trainer

__all__ = ["NonFiniteError", "TrainConfig", "Trainer", "load_config_task", "network_config", "parse_layers"]
