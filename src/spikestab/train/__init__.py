"""Training: config, the Trainer loop with atomic checkpoints and resume, metrics, the ``train`` CLI."""

from .config import TrainConfig, parse_layers
from .trainer import NonFiniteError, Trainer, build_model, load_config_task

__all__ = ["NonFiniteError", "TrainConfig", "Trainer", "build_model", "load_config_task", "parse_layers"]
