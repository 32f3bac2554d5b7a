"""Presets. ``paper_defaults`` reproduces the official code's initialisation (docs/theory.md,
"The neuron") for reproduction runs; spikestab's own defaults are slower leaks (tau = 20).

- membrane time constant tau ~ TruncNormal(0.1, 3 * 0.1 / 7) steps, per neuron and trainable
  (alpha = exp(-1/tau) is about e^-10: almost no membrane memory at initialisation, as in the code);
- threshold ~ TruncNormal(0.01, 0.03 / 7), per neuron and trainable;
- Glorot-uniform input and recurrent weights;
- ALIF: beta_adapt ~ TruncNormal(1.8, 3 * 1.8 / 7) and tau_adapt ~ TruncNormal(T/2, 3 (T/2) / 7) with T the
  sequence length after time repetition (rho = exp(-1/tau_adapt));
- every TruncNormal is truncated at 2 standard deviations (Keras' TruncatedNormal).
The data-side settings of the paper (time repetition 2, dropout 0.1) belong to the task and the config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .models import SNNConfig
from .neurons.layers import require_spiking_layers

__all__ = ["PAPER_TAU", "PAPER_THRESHOLD", "paper_config", "paper_defaults", "trunc_normal"]

PAPER_TAU = 0.1
PAPER_THRESHOLD = 0.01
PAPER_BETA_ADAPT = 1.8


def trunc_normal(n: int, mean: float, std: float, generator: torch.Generator | None = None) -> Tensor:
    """n samples of Normal(mean, std) truncated at mean +- 2 std."""
    t = torch.empty(n)
    return nn.init.trunc_normal_(t, mean, std, mean - 2 * std, mean + 2 * std, generator=generator)


def paper_config(
    input_size: int, output_size: int, hidden_sizes: tuple[int, ...], net: str = "lif", **overrides
) -> SNNConfig:
    """An ``SNNConfig`` with the official code's neuron settings (before the per-neuron sampling of
    :func:`paper_defaults`): tau 0.1, threshold 0.01 (both learned), subtractive detached reset,
    fast-sigmoid SG with dampening = sharpness = 1, dropout 0.1, no internal current (bias buffer 0)."""
    kw: dict[str, Any] = dict(
        input_size=input_size,
        output_size=output_size,
        hidden_sizes=tuple(hidden_sizes),
        net=net,
        tau=PAPER_TAU,
        threshold=PAPER_THRESHOLD,
        learn_tau=True,
        learn_threshold=True,
        reset="subtract",
        detach_reset=True,
        surrogate="fast-sigmoid",
        dampening=1.0,
        sharpness=1.0,
        dropout=0.1,
        bias=False,
    )
    kw.update(overrides)
    return SNNConfig(**kw)


@torch.no_grad()
def paper_defaults(model: nn.Module, seq_len: int | None = None, seed: int | None = None) -> nn.Module:
    """Re-initialise every spiking layer of ``model`` in place with the official code's values (module
    docstring) and return it. ``seq_len`` (time steps after time repetition) is required when the model
    has ALIF layers. ``seed`` makes the sampling reproducible without touching the global RNG.

    Examples:
        >>> from spikestab.models import SNNClassifier
        >>> m = paper_defaults(SNNClassifier(paper_config(80, 10, (128, 128))), seed=0)
        >>> round(m.stack.layers[0].threshold.mean().item(), 2)
        0.01
    """
    layers = require_spiking_layers(model)
    if any(layer.adaptive for layer in layers) and (seq_len is None or seq_len < 1):
        raise ValueError(f"seq_len must be a positive number of time steps for ALIF layers, got {seq_len!r}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for layer in layers:
        h = layer.hidden_size
        layer.tau.copy_(trunc_normal(h, PAPER_TAU, 3 * PAPER_TAU / 7, gen))
        layer.tau.requires_grad_(True)
        layer.threshold.copy_(trunc_normal(h, PAPER_THRESHOLD, 3 * PAPER_THRESHOLD / 7, gen))
        layer.threshold.requires_grad_(True)
        nn.init.xavier_uniform_(layer.weight_ih, generator=gen)
        if layer.weight_hh is not None:
            nn.init.xavier_uniform_(layer.weight_hh, generator=gen)
        if layer.adaptive and seq_len is not None:  # (an ALIF layer without seq_len is refused above)
            half = seq_len / 2.0
            layer.rho.copy_(torch.exp(-1.0 / trunc_normal(h, half, 3 * half / 7, gen)))
            layer.beta_adapt.copy_(trunc_normal(h, PAPER_BETA_ADAPT, 3 * PAPER_BETA_ADAPT / 7, gen))
    return model
