"""Parameters reach the network exactly as given: an SG alias keeps its tail, and a float64 layer runs
with exactly the decay of the tau or alpha it was built with (no float32 round trip)."""

import math

import pytest
import torch

from spikestab import LIF
from spikestab.models import SNNConfig, build_model
from spikestab.neurons import spiking_layers
from spikestab.train import TrainConfig, network_config


class _Task:
    kind, input_size, output_size, n_steps = "classification", 6, 3, 10


@pytest.mark.parametrize("name", ["q-pseudospike", "ntail", "qpseudospike", "q_pseudospike"])
def test_tail_reaches_every_layer_under_any_name_of_the_shape(name):
    cfg = TrainConfig(task="randman", surrogate=name, tail=3.0, layers=(5, 4), epochs=1)
    for layer in spiking_layers(build_model(network_config(cfg, _Task()), _Task.kind)):
        assert layer.spike_fn.shape == "q-pseudospike"
        assert layer.spike_fn.tail == 3.0
    assert SNNConfig(6, 3, surrogate=name, tail=3.0).make_spike_fn().tail == 3.0


def _exact_loop(x: torch.Tensor, w: torch.Tensor, alpha: float, threshold: float) -> torch.Tensor:
    """Feed-forward LIF, subtractive reset, in float64 with the given decay (an independent loop)."""
    v = torch.zeros(x.shape[1], w.shape[0], dtype=torch.float64)
    z = torch.zeros_like(v)
    volts = []
    for t in range(x.shape[0]):
        v = alpha * v + x[t] @ w.t() - threshold * z
        z = (v > threshold).double()
        volts.append(v)
    return torch.stack(volts)


def _check_exact(layer, alpha: float) -> None:
    assert abs(layer.alpha.double()[0].item() - alpha) <= 2e-16, (layer.alpha[0].item(), alpha)
    x = (torch.rand(40, 3, 8, dtype=torch.float64) < 0.3).double()
    _, v, _ = layer(x, return_voltage=True)
    exact = _exact_loop(x, layer.weight_ih.detach(), alpha, 1.0)
    assert (v.detach() - exact).abs().max().item() < 1e-12


@pytest.mark.parametrize("tau", [20.0, 7.0])
def test_layer_converted_to_float64_uses_exactly_the_given_tau(tau):
    torch.manual_seed(0)
    _check_exact(LIF(8, 5, recurrent=False, backend="reference", tau=tau).double(), math.exp(-1.0 / tau))


@pytest.mark.parametrize("given", [{"tau": 20.1}, {"alpha": 0.9}])
def test_layer_built_in_float64_uses_exactly_the_given_tau_or_alpha(given):
    torch.manual_seed(0)
    alpha = math.exp(-1.0 / given["tau"]) if "tau" in given else given["alpha"]
    layer = LIF(8, 5, recurrent=False, backend="reference", dtype=torch.float64, **given)
    assert layer.weight_ih.dtype == torch.float64 and layer.tau.dtype == torch.float64
    _check_exact(layer, alpha)
