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


def test_dropout_acts_on_the_input_of_every_layer_of_a_stack():
    """Each of 3 layers receives the layer below's spikes (the input for layer 0) with every entry either
    dropped or scaled by 1/(1-p) in training, and unchanged in eval mode."""
    p = 0.5
    torch.manual_seed(0)
    model = SNNClassifier(SNNConfig(input_size=10, output_size=3, hidden_sizes=(12, 12, 12), dropout=p, threshold=0.05))
    seen, made = [], []
    for layer in model.stack.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        layer.register_forward_hook(lambda m, args, out: made.append(out[0].detach().clone()))
    x = (torch.rand(20, 4, 10) < 0.5).float()
    for training in (True, False):
        model.train(training)
        seen.clear()
        made.clear()
        model(x)
        for i, got in enumerate(seen):
            below = x if i == 0 else made[i - 1]
            active = below > 0
            assert active.float().mean() > 0.1, f"layer {i - 1} must fire for the check to mean anything"
            if not training:
                assert torch.equal(got, below)
                continue
            kept = got == below / (1 - p)
            assert ((got == 0) | kept).all()  # dropped or scaled, nothing else
            dropped = (got[active] == 0).float().mean().item()
            assert abs(dropped - p) < 0.1, (i, dropped)  # about p of the active entries dropped, in every layer


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
