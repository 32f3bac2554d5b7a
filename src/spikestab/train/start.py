"""What a fresh run does to its model before the first step: calibrate the initial firing rate
(``--init-rate``), apply the stability conditions (the recipe by default, without the conditions whose
parameter the user set: ``TrainConfig.kept``) at that operating point, and measure every layer's initial
rate, warning when one is nearly silent or saturated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..init import calibrate_firing_rate
from ..models import SpikingModel
from ..stability import stabilize
from ..stability.report import rate_warning
from ..stability.stabilize import CHOOSES, RECIPE
from .config import TrainConfig

Probe = Callable[[], "tuple[Tensor, Tensor] | None"]


def kept_line(kept: dict[str, Any], conds: tuple[str, ...]) -> str:
    """What the recipe keeps and what it still applies, in words."""
    values = ", ".join(f"{k}={v!r}" for k, v in kept.items())
    left_out = [c for c in RECIPE if CHOOSES[c] in kept]
    which = f"condition{'s' if len(left_out) > 1 else ''} {' and '.join(left_out)} left out"
    rest = f"the recipe applies {','.join(conds)}" if conds else "no condition is applied"
    return f"kept as you set {'them' if len(kept) > 1 else 'it'}: {values} ({which}); {rest}"


def _stabilize(model: SpikingModel, cfg: TrainConfig, batch: Tensor, probe: Probe, log: Callable[[str], None]) -> dict:
    """The conditions of ``cfg.recipe_conditions()`` on ``model``; stability.json's report entries."""
    conds, kept = cfg.recipe_conditions(), cfg.kept()
    result: dict[str, Any] = {}
    if kept:
        result["kept"] = kept
        log(kept_line(kept, conds))
    if not conds:
        return result
    recipe: dict[str, Any] = {}
    if cfg.conditions == ("auto",) or conds == RECIPE:  # the regime sets D's and G's targets
        measured = cfg.regime == "auto" and "D" in conds  # it is measured by D's threshold scan
        recipe = {"regime": cfg.regime, "probe": probe() if measured else None, "sparse_rate": cfg.sparse_rate}
    report = stabilize(model, batch, conditions=conds, mode=cfg.stability_mode, **recipe)
    log(str(report))
    return {**result, "report": report.to_dict(), "report_text": str(report)}


def initialise(model: SpikingModel, cfg: TrainConfig, batch: Tensor, probe: Probe, log: Callable[[str], None]) -> dict:
    """Calibrate, stabilise and measure ``model`` on ``batch`` (``probe()``: the recipe's labelled
    samples, asked for only when the recipe chooses its regime); returns stability.json's content."""
    result: dict[str, Any] = {}
    model.eval()
    if cfg.init_rate is not None:
        result["init_rate"] = calibrate_firing_rate(model, batch, rate=cfg.init_rate)
    result.update(_stabilize(model, cfg, batch, probe, log))
    with torch.no_grad():
        result["initial_rates"] = [z.mean().item() for z in model.simulate(batch).spikes]
    by = "user" if "threshold" in result.get("kept", {}) else "D" if "D" in cfg.recipe_conditions() else "open"
    layers = (result.get("report") or {}).get("layers", [])
    targets = [layer["conditions"].get("D", {}).get("target") for layer in layers]  # D's rate per layer, if D ran
    warnings = [
        w
        for i, r in enumerate(result["initial_rates"])
        if (w := rate_warning(i, r, by, targets[i] if i < len(targets) else None))
    ]
    if warnings:
        result["warnings"] = warnings
        for w in warnings:
            log(f"warning: {w}")
    model.train()
    return result
