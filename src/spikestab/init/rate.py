"""Initial firing-rate calibration (docs/theory.md, "Rate calibration").

:func:`calibrate_firing_rate` sets each spiking layer's bias (internal current) by a deterministic root
find on a data batch so that the measured initial rate is f0, layer by layer (each layer sees the layer
below as already calibrated). :func:`train_bias_for_rate` is the paper's variant, Adam on the biases only
with the loss sum_l (mean z_l - f0)^2, kept for comparison.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from ..neurons.layers import SpikingNeurons, require_spiking_layers
from ..stability import check_rate, layer_input, record, solve_increasing

__all__ = ["calibrate_firing_rate", "train_bias_for_rate"]


def _check(model: nn.Module, rate: float) -> list[SpikingNeurons]:
    check_rate(rate)
    layers = require_spiking_layers(model)
    for i, layer in enumerate(layers):
        for name, t in layer.named_parameters():
            if not torch.isfinite(t).all():
                raise ValueError(f"spiking layer {i} has non-finite values in {name}")
    return layers


@torch.no_grad()
def _set_bias(layer: SpikingNeurons, value: Tensor) -> None:
    layer.bias.copy_(value)


def calibrate_firing_rate(
    model: nn.Module, batch, rate: float = 0.5, per_neuron: bool = False, tol: float = 0.02, max_iter: int = 40
) -> list[dict]:
    """Set every spiking layer's bias so that its measured initial firing rate on ``batch`` is ``rate``.

    Layer by layer, the rate (mean over time, batch and neurons, from the zero state, dropout off) is
    monotone in a common bias shift, which a bracketed root find (doubling expansion, then Illinois) sets
    to within ``tol / 2``. With ``per_neuron=True`` every neuron's bias then takes ``max_iter / 2`` damped
    Newton steps on its own rate error (gain: half the inverse of the layer's rate sensitivity to the
    bias), so the per-neuron rates approach f0 too (approximately: neurons interact through the
    recurrence), and the common shift is root-found again. Returns one dict per layer with the
    target, the measured rate, the mean bias, ``feasible`` (|rate - target| <= tol) and the number of
    simulations used. Unreachable targets (e.g. f0 > 1/2 with the multiplicative_all reset, which cannot
    fire two steps in a row) are reported infeasible with the closest rate.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> _ = torch.manual_seed(0)
        >>> m = SNNClassifier(SNNConfig(30, 4, hidden_sizes=(32,), dropout=0.0))
        >>> out = calibrate_firing_rate(m, (torch.rand(100, 4, 30) < 0.1).float(), rate=0.3)
        >>> abs(out[0]["rate"] - 0.3) <= 0.02
        True
    """
    layers = _check(model, rate)
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    results = []
    for idx, layer in enumerate(layers):
        x = layer_input(model, batch, idx)
        base = layer.bias.detach().clone()
        with torch.no_grad():
            spread = float((layer.input_current(x) - base).std()) + float(layer.threshold.mean())
        scale = spread * max(1.0, float((1.0 - layer.alpha.detach()).min()) ** -0.5)
        offset = torch.zeros_like(base)

        def gap(shift: float) -> float:
            _set_bias(layer, base + offset + shift)
            return record(layer, x).rate - rate

        root = solve_increasing(gap, 0.0, 0.25 * scale, ftol=tol / 2, max_iter=max_iter)
        evals = root.evals
        if per_neuron:
            # damped Newton steps on each neuron's own rate error, with the layer's rate sensitivity
            # d rate / d bias (central difference) as the gain; then the common shift again
            h = 0.1 * scale
            slope = (gap(root.x + h) - gap(root.x - h)) / (2 * h)
            gain = 0.5 / slope if slope > 0 else 0.1 * scale
            offset = offset + root.x
            for _ in range(max_iter // 2):
                _set_bias(layer, base + offset)
                offset = offset + gain * (rate - record(layer, x).z.mean((0, 1)))
            root = solve_increasing(gap, 0.0, 0.25 * scale, ftol=tol / 2, max_iter=max_iter)
            evals += 2 + max_iter // 2 + root.evals
        _set_bias(layer, base + offset + root.x)
        tr = record(layer, x)
        per = tr.z.mean((0, 1))
        results.append(
            {
                "layer": idx,
                "target": rate,
                "rate": tr.rate,
                "bias_mean": float(layer.bias.detach().mean()),
                "feasible": abs(tr.rate - rate) <= tol,
                "simulations": evals,
                "neuron_rate_std": float(per.std()) if per.numel() > 1 else 0.0,
            }
        )
    return results


def train_bias_for_rate(
    model: nn.Module, batch, rate: float = 0.5, steps: int = 200, lr: float = 1e-2, tol: float = 0.02
) -> dict:
    """The paper's calibration: Adam (learning rate ``lr``) on the spiking layers' biases only, all other
    weights frozen, minimising sum_l (mean z_l - rate)^2 on ``batch`` through the surrogate gradient, for
    at most ``steps`` steps (stops once every layer is within ``tol``). Returns the per-step layer rates,
    the number of steps used and whether every layer ended within ``tol``.

    Examples:
        >>> from spikestab.models import SNNClassifier, SNNConfig
        >>> _ = torch.manual_seed(0)
        >>> m = SNNClassifier(SNNConfig(30, 4, hidden_sizes=(32,), dropout=0.0))
        >>> out = train_bias_for_rate(m, (torch.rand(50, 4, 30) < 0.1).float(), rate=0.3, steps=5)
        >>> len(out["history"]) <= 5
        True
    """
    layers = _check(model, rate)
    if steps < 1 or not lr > 0:
        raise ValueError(f"steps must be >= 1 and lr > 0, got steps={steps!r}, lr={lr!r}")
    biases = [layer.bias for layer in layers]
    flags = [b.requires_grad for b in biases]
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    spikes: list[Tensor] = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: spikes.append(out[0])) for layer in layers]
    was_training = model.training
    model.eval()
    history: list[list[float]] = []
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for b in biases:
            b.requires_grad_(True)
        opt = torch.optim.Adam(biases, lr=lr)
        for _ in range(steps):
            spikes.clear()
            model(batch)
            rates = [s.mean() for s in spikes[: len(layers)]]
            history.append([r.item() for r in rates])
            if all(abs(r - rate) <= tol for r in history[-1]):
                break
            loss = cast(Tensor, sum((r - rate) ** 2 for r in rates))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for h in hooks:
            h.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        for b, flag in zip(biases, flags):
            b.requires_grad_(flag)
        model.train(was_training)
    final = history[-1]
    return {
        "history": history,
        "steps": len(history),
        "rates": final,
        "feasible": all(abs(r - rate) <= tol for r in final),
        "max_error": max(abs(r - rate) for r in final),
    }
