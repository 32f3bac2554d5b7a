"""Evaluation passes: a split's mean per-step cross-entropy, score (accuracy or perplexity) and firing
rates; one sample's activity for the raster figure. Both run on the model's device."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models import SNNClassifier, SpikingModel
from ..stability.stabilize import model_device, to_device
from .config import TrainConfig
from .device import autocast
from .step import task_loss
from .task import SCORES, eval_batches, eval_score, sample_input


@torch.no_grad()
def evaluate(model: SpikingModel, task: Any, cfg: TrainConfig, split: str) -> dict:
    """Mean per-step cross-entropy, accuracy (time-averaged logits) or perplexity, and layer rates of
    ``split``, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    total, count, correct = 0.0, 0, 0
    rate_sum = [0.0] * len(cfg.layers)
    states, device = None, model_device(model)
    for batch in eval_batches(task, cfg, split):
        inputs, targets = to_device(batch, device)
        with autocast(cfg.precision, device):
            out = model.simulate(inputs, states)
            batch_loss = task_loss(out.logits, targets).item()
        states = out.states
        n = targets.numel()
        total += batch_loss * n
        count += n
        rate_sum = [r0 + z.mean().item() * n for r0, z in zip(rate_sum, out.spikes)]
        if task.kind == "classification":
            correct += int((SNNClassifier.predict(out.logits) == targets).sum())
    model.train(was_training)
    if count == 0:
        raise ValueError(f"the {split} split of task {task.name!r} is empty")
    loss = total / count
    return {
        "loss": loss,
        "rates": [r / count for r in rate_sum],
        SCORES[task.kind]: eval_score(task.kind, loss, correct, count),
    }


@torch.no_grad()
def sample_activity(
    model: SpikingModel, task: Any, cfg: TrainConfig, split: str = "test", index: int = 0
) -> tuple[Tensor | None, list[Tensor]]:
    """One sample's input [T, N] (None for token input) and every layer's spikes [T, H] (on the CPU, for
    the figures), eval mode."""
    was_training = model.training
    model.eval()
    inputs = sample_input(task, cfg, split, index)
    device = model_device(model)
    with autocast(cfg.precision, device):
        spikes = model.simulate(inputs.to(device)).spikes
    model.train(was_training)
    return (None if task.kind == "language" else inputs[:, 0]), [z[:, 0].cpu() for z in spikes]
