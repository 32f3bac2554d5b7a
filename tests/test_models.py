"""Stacked classifier and language model: shapes, readout semantics, tied weights, state carry-over."""

import pytest
import torch

from spikestab import SNNClassifier, SNNConfig, SNNLanguageModel
from spikestab.neurons import spiking_layers


def test_classifier_shapes_and_time_averaged_prediction():
    model = SNNClassifier(SNNConfig(input_size=10, output_size=4, hidden_sizes=(16, 8), net="alif")).eval()
    x = (torch.rand(30, 5, 10) < 0.3).float()
    logits, spikes, volts = model.run(x, record_voltage=True)
    assert logits.shape == (30, 5, 4)
    assert [s.shape for s in spikes] == [(30, 5, 16), (30, 5, 8)]
    assert [v.shape for v in volts] == [(30, 5, 16), (30, 5, 8)]
    # readout acts at every step on the last layer's spikes
    torch.testing.assert_close(logits, model.readout(spikes[-1]))
    assert torch.equal(SNNClassifier.predict(logits), logits.mean(0).argmax(-1))
    assert len(spiking_layers(model)) == 2


def test_dropout_sits_before_every_layer():
    cfg = SNNConfig(input_size=10, output_size=3, hidden_sizes=(12,), dropout=0.5, threshold=0.05)
    model = SNNClassifier(cfg)
    x = torch.ones(20, 4, 10)
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    c = model(x)
    assert not torch.equal(a, c), "input dropout must change the first layer's input in training mode"


def test_language_model_ties_projection_and_carries_state():
    cfg = SNNConfig(input_size=8, output_size=30, hidden_sizes=(16, 8), dropout=0.0, threshold=0.1)
    lm = SNNLanguageModel(cfg)
    tok = torch.randint(0, 30, (12, 3))
    logits, spikes, _, states = lm.run(tok)
    assert logits.shape == (12, 3, 30)
    torch.testing.assert_close(logits, spikes[-1] @ lm.embedding.weight.T + lm.output_bias)
    full, _ = lm(tok)
    first, st = lm(tok[:5])
    second, _ = lm(tok[5:], st)
    torch.testing.assert_close(torch.cat([first, second]), full)


def test_config_validation():
    with pytest.raises(ValueError, match="net"):
        SNNConfig(input_size=3, output_size=2, net="lstm")
    with pytest.raises(ValueError, match="hidden_sizes"):
        SNNConfig(input_size=3, output_size=2, hidden_sizes=())
    with pytest.raises(ValueError, match="dropout"):
        SNNConfig(input_size=3, output_size=2, dropout=1.0)
    with pytest.raises(ValueError, match="hidden_sizes\\[-1\\]"):
        SNNLanguageModel(SNNConfig(input_size=8, output_size=30, hidden_sizes=(16,)))
