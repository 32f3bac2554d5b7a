"""What a finished ``spikestab train`` run prints: its figures and its test result, naming the weights
that were tested."""

from __future__ import annotations

from typing import Any


def tested_weights(results: dict) -> str:
    """Which weights a run's test numbers belong to, numbered as on the console (epochs from 1) with
    results.json's 0-based ``best_epoch`` alongside."""
    best, epochs = results["best_epoch"], results["config"]["epochs"]
    if best < 0:
        return "the last weights (no epoch had a finite validation loss, so there is no best-val epoch)"
    return f"the best-val epoch {best + 1}/{epochs} (best_epoch {best} in results.json)"


def report(trainer: Any, results: dict, figures: bool) -> None:
    """Draw the run's figures (unless ``figures`` is False) and print its test result."""
    cfg = trainer.cfg
    if figures:
        from ..plots import run_figures, spike_raster

        inputs, spikes = trainer.sample_activity("test", 0)
        paths = run_figures(cfg.out) + [
            spike_raster(inputs, spikes, f"{cfg.out}/figures/raster.png", title=f"{cfg.task}: first test sample")
        ]
        for path in paths:
            print(f"figure: {path}")
    test = results["test"]
    metric = f"perplexity {test['perplexity']:.2f}" if "perplexity" in test else f"accuracy {test['accuracy']:.4f}"
    print(f"test {metric} (loss {test['loss']:.4f}) of {tested_weights(results)}; results in {cfg.out}/results.json")
