"""The recipe's regime choice (``spikestab.stability.regime``): the count-readability probe against
closed-form references, the decision on a count code and on a timing code, the sparse regime's measured
targets on LIF and ALIF, widths 64 and 256, every reset, and bad input / failure leaving the model as it was."""

import copy
import functools
import json
import math
import sys

import pytest
import torch

from spikestab.data.randman import spiking_randman
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons import RESETS
from spikestab.stability import stabilize
from spikestab.stability.drive import growth_target
from spikestab.stability.regime import (
    DENSE_READABILITY,
    MIN_PROBE_SAMPLES,
    SPARSE_GROWTH_RATIO,
    SPARSE_RATE,
    choose_regime,
    count_readability,
)
from train_tiny import tiny_train

CASES = [(net, reset, width) for width in (64, 256) for net in ("lif", "alif") for reset in RESETS]


pytestmark = pytest.mark.usefixtures("one_thread")


def _binomial_pmf(n: int, p: float) -> list[float]:
    return [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


def test_readability_of_one_informative_neuron_is_the_bayes_accuracy():
    """Two classes, one neuron firing with p 0.3 or 0.5 per step for 40 steps, 7 silent-noise neurons: the
    best any classifier of the counts can do is the Bayes accuracy of Binomial(40, 0.3) vs (40, 0.5)."""
    gen = torch.Generator().manual_seed(0)
    n, steps = 1024, 40
    labels = torch.arange(n) % 2
    p = torch.where(labels == 0, 0.3, 0.5)
    spikes = torch.rand(steps, n, 8, generator=gen) < 0.1
    spikes[:, :, 0] = torch.rand(steps, n, generator=gen) < p
    bayes = 0.5 * sum(max(a, b) for a, b in zip(_binomial_pmf(steps, 0.3), _binomial_pmf(steps, 0.5)))
    acc = count_readability(spikes.float(), labels, 2)
    assert abs(acc - bayes) <= 3 * math.sqrt(bayes * (1 - bayes) / n)  # bayes = 0.896


def test_readability_of_a_separable_code_is_one_and_of_noise_is_chance():
    gen = torch.Generator().manual_seed(1)
    n, classes = 512, 4
    labels = torch.arange(n) % classes
    noise = (torch.rand(30, n, 16, generator=gen) < 0.2).float()
    coded = noise.clone()
    coded[:, torch.arange(n), labels] = 1.0  # neuron c fires at every step for class c
    assert count_readability(coded, labels, classes) == 1.0
    chance = count_readability(noise, labels, classes)
    assert abs(chance - 1 / classes) <= 3 * math.sqrt(0.25 * 0.75 / n)


def _count_code(n: int, classes: int = 4, channels: int = 40, steps: int = 100):
    """Class c: its own 10 channels fire at 0.3 per step, the rest at 0.02 (information in which inputs fire)."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(n) % classes
    p = torch.full((n, channels), 0.02)
    for c in range(classes):
        p[labels == c, c * 10 : (c + 1) * 10] = 0.3
    return (torch.rand(steps, n, channels, generator=gen) < p).float(), labels


def _model(inputs: int, classes: int, width: int = 64, net: str = "lif", reset: str = "subtract") -> SNNClassifier:
    torch.manual_seed(3)
    return SNNClassifier(SNNConfig(inputs, classes, hidden_sizes=(width, width), net=net, reset=reset, dropout=0.0))


def test_a_count_code_starts_dense_and_a_timing_code_sparse():
    x, y = _count_code(512)
    model = _model(40, 4)
    dense = choose_regime(model, model.stack.layers[0], x, y)
    assert dense.regime == "dense" and dense.ratio >= DENSE_READABILITY and not dense.timing_code
    assert dense.input_readability > 0.9 and dense.baseline == 0.25
    # Randman (Zenke & Vogels 2021): each channel fires once, the class is in the spike times, so the
    # input counts carry nothing and only a sparse, coincidence-detecting layer turns timing into counts
    latencies, labels = spiking_randman(n_classes=4, n_units=50, n_steps=100, dim=2, samples_per_class=128)
    xr = torch.zeros(100, len(labels), 50)
    xr[torch.as_tensor(latencies).long(), torch.arange(len(labels))[:, None], torch.arange(50)] = 1.0
    yr = torch.as_tensor(labels)
    model = _model(50, 4)
    sparse = choose_regime(model, model.stack.layers[0], xr, yr)
    assert sparse.regime == "sparse" and sparse.ratio < DENSE_READABILITY
    # the input's counts (all 1) carry nothing: the timing-code clause alone makes the start sparse
    assert sparse.timing_code and "timing code" in str(sparse)
    assert sparse.input_readability <= sparse.baseline + 3 * math.sqrt(0.25 * 0.75 / len(yr))


def test_choose_regime_leaves_the_model_exactly_as_it_was():
    x, y = _count_code(256)
    model = _model(40, 4)
    before = copy.deepcopy(model.state_dict())
    fns = [layer.spike_fn for layer in model.stack.layers]
    choice = choose_regime(model, model.stack.layers[0], x, y)
    assert len(choice.scan) > 1 and choice.samples == 256 and choice.classes == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(layer.spike_fn is fn for layer, fn in zip(model.stack.layers, fns))


def _inputs(width: int, rate: float = 0.05, steps: int = 150, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(12)
    return (torch.rand(steps, batch, width, generator=gen) < rate).float()


@functools.cache
def sparse_recipe(net: str, reset: str, width: int):
    torch.manual_seed(3)
    model = SNNClassifier(SNNConfig(width, 5, hidden_sizes=(width,), net=net, reset=reset, dropout=0.0))
    return model, stabilize(model, _inputs(width), regime="sparse")


@pytest.mark.parametrize("net,reset,width", CASES)
def test_sparse_regime_hits_its_rate_and_growth(net, reset, width):
    model, report = sparse_recipe(net, reset, width)
    layer = report.layers[0]
    assert report.regime["regime"] == "sparse" and not report.regime["measured"]
    with torch.no_grad():  # the rate by the layer's own forward, independently of the report
        rate = model.stack.layers[0](_inputs(width))[0].mean().item()
    assert layer.condition("D").target == SPARSE_RATE and abs(rate - SPARSE_RATE) <= 0.01
    target = growth_target(model.stack.layers[0], SPARSE_GROWTH_RATIO)
    assert target == pytest.approx(0.9 * -1 / 20)
    assert layer.condition("G").target == pytest.approx(target)
    assert abs(layer.measurements["growth_per_step"] - target) <= 2e-3


def test_measured_regime_is_reported_and_sets_the_targets():
    x, y = _count_code(256)
    model = _model(40, 4)
    report = stabilize(model, x[:, :8], probe=(x, y))
    assert report.regime["measured"] and report.regime["regime"] == "dense"
    assert report.layers[0].condition("D").target == 0.5 and "regime dense" in str(report)
    assert stabilize(_model(40, 4), x[:, :8]).regime == {
        "regime": "dense",
        "measured": False,
        "summary": "regime dense: not measured (no labelled probe set): the dense default",
    }


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(regime="medium"), "regime must be one of"),
        (dict(conditions="III", regime="sparse"), "recommended recipe"),
        (dict(probe="labels"), "probe"),
        (dict(probe=(torch.zeros(10, 100, 40), torch.zeros(99, dtype=torch.long))), "one entry per sample"),
        (dict(probe=(torch.zeros(10, 100, 40), torch.zeros(100))), "integer"),
        (dict(probe=(torch.zeros(10, 8, 40), torch.arange(8))), f"at least {MIN_PROBE_SAMPLES}"),
        (dict(probe=(torch.zeros(10, 100, 40), torch.zeros(100, dtype=torch.long))), "at least 2 classes"),
        (dict(probe=(torch.zeros(10, 100, 40), torch.arange(100) - 1)), ">= 0"),
    ],
)
def test_bad_input_raises_before_any_weight_changes(kw, message):
    model = _model(40, 4)
    before, fns = _state(model), [layer.spike_fn for layer in model.stack.layers]
    with pytest.raises(ValueError, match=message):
        stabilize(model, _count_code(8)[0], **kw)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(layer.spike_fn is fn for layer, fn in zip(model.stack.layers, fns))


def test_failure_after_the_regime_choice_leaves_the_model_exactly_as_it_was(monkeypatch):
    x, y = _count_code(256)
    model = _model(40, 4)
    before, fns = _state(model), [layer.spike_fn for layer in model.stack.layers]
    mod = sys.modules["spikestab.stability.stabilize"]
    real, calls = mod.condition_g, []

    def fail_on_second_layer(layer, *args, **kw):
        calls.append(layer)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(layer, *args, **kw)

    monkeypatch.setattr(mod, "condition_g", fail_on_second_layer)
    with pytest.raises(RuntimeError, match="boom"):
        stabilize(model, x[:, :8], probe=(x, y))
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(layer.spike_fn is fn for layer, fn in zip(model.stack.layers, fns))


def test_train_measures_the_regime_on_its_first_labelled_samples(tmp_path, capsys):
    from spikestab.cli import main

    tiny = tiny_train("--epochs", "1", "--no-figures", samples_per_class=40)
    assert main(["train", *tiny, "--out", str(tmp_path / "auto")]) == 0
    report = json.loads((tmp_path / "auto" / "results.json").read_text())["stability"]["report"]
    regime = report["regime"]
    assert regime["measured"] and regime["regime"] in ("dense", "sparse") and regime["classes"] == 3
    assert 64 <= regime["samples"] <= 120  # every training sample up to PROBE_SAMPLES (the split holds < 120)
    assert "regime " in capsys.readouterr().out
    assert main(["train", *tiny, "--regime", "sparse", "--out", str(tmp_path / "sparse")]) == 0
    forced = json.loads((tmp_path / "sparse" / "results.json").read_text())["stability"]
    assert forced["report"]["regime"] == {"regime": "sparse", "measured": False, "summary": "regime sparse: forced"}
    assert forced["report"]["layers"][0]["conditions"]["D"]["target"] == SPARSE_RATE
