"""What a fresh run does to its model before the first step: calibrate the initial firing rate
(``--init-rate``), apply the stability conditions (the recipe by default) at that operating point, and
measure every layer's initial rate, warning when one is nearly silent or saturated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..init import calibrate_firing_rate
from ..models import SpikingModel
from ..stability import RECIPE, resolve_conditions, stabilize
from ..stability.report import rate_warning
from .config import TrainConfig

Probe = Callable[[], "tuple[Tensor, Tensor] | None"]


def initialise(model: SpikingModel, cfg: TrainConfig, batch: Tensor, probe: Probe, log: Callable[[str], None]) -> dict:
    """Calibrate, stabilise and measure ``model`` on ``batch`` (``probe()``: the recipe's labelled
    samples, asked for only when the recipe chooses its regime); returns stability.json's content."""
    result: dict[str, Any] = {}
    model.eval()
    if cfg.init_rate is not None:
        result["init_rate"] = calibrate_firing_rate(model, batch, rate=cfg.init_rate)
    if cfg.conditions:
        recipe: dict[str, Any] = {}
        if resolve_conditions(cfg.conditions) == RECIPE:
            recipe = {"regime": cfg.regime, "probe": probe() if cfg.regime == "auto" else None}
        report = stabilize(model, batch, conditions=cfg.conditions, mode=cfg.stability_mode, **recipe)
        log(str(report))
        result["report"] = report.to_dict()
        result["report_text"] = str(report)
    with torch.no_grad():
        result["initial_rates"] = [z.mean().item() for z in model.simulate(batch).spikes]
    warnings = [w for i, r in enumerate(result["initial_rates"]) if (w := rate_warning(i, r))]
    if warnings:
        result["warnings"] = warnings
        for w in warnings:
            log(f"warning: {w}")
    model.train()
    return result
