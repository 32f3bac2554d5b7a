"""Trainer: outputs, interrupted-and-resumed runs identical to uninterrupted ones, refusal to overwrite or
to resume a different config, the paper's weight decay, bad configs."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spikestab.data.loader import SpikeDataset
from spikestab.data.randman import spiking_randman
from spikestab.files import read_jsonl
from spikestab.models import build_model, load_model_state
from spikestab.stability.regime import TIMING_SPARSE_RATE
from spikestab.train import TrainConfig, Trainer, network_config, parse_layers
from spikestab.train.task import train_batches


def tiny_task(input_dropout: float = 0.0):
    lat, labels = spiking_randman(n_classes=3, n_units=12, n_steps=20, dim=1, samples_per_class=40, seed=0)
    ds = SpikeDataset.from_latencies(lat, labels, base_steps=20)
    idx = torch.arange(len(labels)).tolist()
    return SimpleNamespace(
        name="randman",
        kind="classification",
        input_size=12,
        output_size=3,
        class_names=None,
        train=ds.subset(idx[:84], input_dropout=input_dropout),
        val=ds.subset(idx[84:102]),
        test=ds.subset(idx[102:]),
        n_steps=20,
    )


def separable_task():
    """A small fixed task any working trainer learns: 3 classes of 50 samples; class c makes its own 4 of
    the 12 input channels fire early (p = 0.9, steps 0-9) while every other channel fires at random
    (p = 0.15, steps 0-19). Chance is 1/3; 90 train / 30 val / 30 test samples."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    rng.shuffle(labels)
    lat = np.where(rng.random((150, 12)) < 0.15, rng.integers(0, 20, (150, 12)), -1)
    for i, c in enumerate(labels):
        own = slice(4 * c, 4 * c + 4)
        lat[i, own] = np.where(rng.random(4) < 0.9, rng.integers(0, 10, 4), -1)
    ds = SpikeDataset.from_latencies(lat, labels, base_steps=20)
    return SimpleNamespace(
        name="separable",
        kind="classification",
        input_size=12,
        output_size=3,
        class_names=None,
        train=ds.subset(range(90)),
        val=ds.subset(range(90, 120)),
        test=ds.subset(range(120, 150)),
        n_steps=20,
    )


CHANCE_MARGIN = 0.4  # on separable_task, training must reach chance (1/3) + 0.4 test accuracy


def tiny_lm_task():
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, 30, (n,), generator=g)  # noqa: E731
    return SimpleNamespace(
        name="ptb",
        kind="language",
        input_size=16,
        output_size=30,
        class_names=None,
        train=ids(400),
        val=ids(120),
        test=ids(120),
        n_steps=10,
    )


def cfg_for(tmp_path, name="run", **kw):
    base = dict(
        task="randman",
        layers="2x16",
        epochs=3,
        batch_size=16,
        eval_batch_size=64,
        lr=5e-3,
        dropout=0.2,
        checkpoint_every=3,
        progress=False,
        out=str(tmp_path / name),
        seed=3,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


class Interrupt(Exception):
    pass


def interrupt_at(step):
    def hook(trainer, global_step):
        if global_step == step:
            raise Interrupt(f"killed at step {global_step}")

    return hook


def _strip_times(records):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def test_fit_writes_outputs(tmp_path):
    cfg = cfg_for(tmp_path, sparsity="l1_rate:0.05:linear")
    res = Trainer(cfg, tiny_task(), log=lambda s: None).fit()
    out = tmp_path / "run"
    for name in ("config.json", "checkpoint.pt", "best.pt", "metrics.jsonl", "results.json"):
        assert (out / name).exists(), name
    recs = read_jsonl(out / "metrics.jsonl")
    epochs = [r for r in recs if r["kind"] == "epoch"]
    steps = [r for r in recs if r["kind"] == "step"]
    assert len(epochs) == 3 and len(steps) == 3 * 6  # 84 samples / 16 = 6 batches per epoch
    assert [r["kind"] for r in recs][-1] == "test"
    assert set(epochs[0]) >= {"train_loss", "val_loss", "val_accuracy", "train_rates", "grad_norm", "sparsity_weight"}
    assert len(steps[0]["rates"]) == 2 and len(steps[0]["layer_grad_norms"]) == 2
    # the sparsity weight follows the linear ramp 0.2E -> 0.6E (E = 3): 0 at epoch 0, 1 from epoch 1.8 on
    assert steps[0]["sparsity_weight"] == 0.0 and steps[-1]["sparsity_weight"] == 1.0
    assert json.loads((out / "results.json").read_text())["best_epoch"] == res["best_epoch"]
    # the test numbers are best.pt's, recomputed here by a plain loop over the test set
    model = build_model(network_config(cfg, tiny_task()), "classification")
    load_model_state(model, torch.load(out / "best.pt", weights_only=True))
    model.eval()
    x, y = tiny_task().test.densify(list(range(18))), tiny_task().test.labels
    with torch.no_grad():
        logits = model(x)
    assert res["test"]["accuracy"] == pytest.approx(
        float((logits.mean(0).argmax(-1) == torch.as_tensor(y)).float().mean())
    )
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), torch.as_tensor(y).repeat(logits.shape[0]))
    assert res["test"]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert recs[-1]["test_accuracy"] == res["test"]["accuracy"]


def test_training_beats_chance_on_a_separable_task(tmp_path):
    """Chance is 1/3; 10 epochs reach 0.87 test accuracy (seeds 3, 0 and 1 alike), an untrained network
    (lr 1e-9) 0.30-0.43. The bar: chance + CHANCE_MARGIN (0.73) on test and validation."""
    res = Trainer(cfg_for(tmp_path, epochs=10), separable_task(), log=lambda s: None).fit()
    assert res["test"]["accuracy"] >= 1 / 3 + CHANCE_MARGIN
    assert res["val"]["accuracy"] >= 1 / 3 + CHANCE_MARGIN


@pytest.mark.parametrize("kill_step", [8, 10, 12])  # after an epoch checkpoint; mid-epoch; at an epoch end
def test_resume_after_kill_is_identical(tmp_path, kill_step):
    full = Trainer(cfg_for(tmp_path, "full"), tiny_task(0.1), log=lambda s: None)
    res_full = full.fit()
    cfg = cfg_for(tmp_path, "cut")
    with pytest.raises(Interrupt):
        Trainer(cfg, tiny_task(0.1), on_step=interrupt_at(kill_step), log=lambda s: None).fit()
    resumed = Trainer(cfg, tiny_task(0.1), log=lambda s: None)
    res_cut = resumed.fit(resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res_cut["test"] == res_full["test"]
    assert _strip_times(read_jsonl(tmp_path / "full/metrics.jsonl")) == _strip_times(
        read_jsonl(tmp_path / "cut/metrics.jsonl")
    )


def test_language_model_resume_is_identical(tmp_path):
    kw = dict(
        task="ptb", layers="16", batch_size=4, seq_len=10, epochs=2, checkpoint_every=4, eval_batch_size=4, eval_every=3
    )
    full = Trainer(cfg_for(tmp_path, "full", **kw), tiny_lm_task(), log=lambda s: None)
    res_full = full.fit()
    cfg = cfg_for(tmp_path, "cut", **kw)
    with pytest.raises(Interrupt):
        Trainer(cfg, tiny_lm_task(), on_step=interrupt_at(6), log=lambda s: None).fit()
    resumed = Trainer(cfg, tiny_lm_task(), log=lambda s: None)
    res_cut = resumed.fit(resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert res_cut["test"]["perplexity"] == res_full["test"]["perplexity"]
    assert res_full["test"]["perplexity"] > 1.0
    evals = [r for r in read_jsonl(tmp_path / "cut/metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 9, 12, 15, 18]  # every 3 global steps; 10 windows per epoch
    assert _strip_times(read_jsonl(tmp_path / "full/metrics.jsonl")) == _strip_times(
        read_jsonl(tmp_path / "cut/metrics.jsonl")
    )


def test_refuses_overwrite_and_foreign_resume(tmp_path):
    cfg = cfg_for(tmp_path, epochs=1)
    Trainer(cfg, tiny_task(), log=lambda s: None).fit()
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(cfg, tiny_task(), log=lambda s: None).fit()
    with pytest.raises(ValueError, match=r"different config \(lr: saved 0.005 vs now 0.001"):
        Trainer(cfg_for(tmp_path, epochs=1, lr=1e-3), tiny_task(), log=lambda s: None).fit(resume=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert before == after
    # a finished run resumed with the same config returns its results without training again
    res = Trainer(cfg, tiny_task(), log=lambda s: None).fit(resume=True)
    assert res["epochs_done"] == 1


def test_paper_weight_decay_is_not_scaled_by_lr(tmp_path):
    cfg = cfg_for(tmp_path, epochs=1, lr=1e-12, weight_decay=0.1, paper_weight_decay=True, dropout=0.0)
    tr = Trainer(cfg, tiny_task(), log=lambda s: None)
    w0 = tr.model.readout.weight.detach().clone()
    batch = next(iter(train_batches(tr.task, tr.cfg, 0)))
    tr.train_step(batch, 0.0)
    torch.testing.assert_close(tr.model.readout.weight.detach(), w0 * 0.9, atol=1e-9, rtol=1e-6)


def test_bad_configs():
    with pytest.raises(ValueError, match="layers must look like"):
        TrainConfig(layers="2x")
    with pytest.raises(ValueError, match="layers must have at least one layer"):
        TrainConfig(layers="0x128")
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="cifar")
    with pytest.raises(ValueError, match="surrogate must be one of"):
        TrainConfig(surrogate="relu")
    with pytest.raises(ValueError, match="conditions must be"):
        TrainConfig(conditions="I,V")
    with pytest.raises(ValueError, match="sparsity variant"):
        TrainConfig(sparsity="l0:0.1")
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    assert parse_layers("2x256") == (256, 256) and parse_layers("256,128") == (256, 128)


def test_sparsity_ramp_moves_rates_toward_target(tmp_path):
    """Same network, data and seed: with the l1_rate loss ramped in (0.2E -> 0.6E) the firing rates end
    close to the target 0.02; without it they stay far from it."""
    target = 0.02
    final, initial = {}, None
    for name, spec in (("off", None), ("on", f"l1_rate:{target}:linear:2")):
        tr = Trainer(
            cfg_for(tmp_path, name, threshold=0.3, epochs=4, dropout=0.0, sparsity=spec, conditions="none"),
            tiny_task(),
            log=lambda s: None,
        )
        initial = tr.evaluate("val")["rates"]
        tr.fit()
        final[name] = tr.evaluate("val")["rates"]  # the last weights (fit keeps them in the model)
    dist0 = [abs(r - target) for r in initial]
    assert min(dist0) > 0.2  # the network starts far from the target
    assert all(abs(r - target) < 0.25 * d for r, d in zip(final["on"], dist0))
    assert sum(abs(r - target) for r in final["off"]) > 0.7 * sum(dist0)
    steps = [r for r in read_jsonl(tmp_path / "on/metrics.jsonl") if r["kind"] == "step"]
    assert all(r["sparsity_weight"] == 0.0 for r in steps if r["step"] <= 4)  # 6 steps per epoch: 0.2E = 4.8 steps


def test_stabilize_and_init_rate_are_applied_before_training(tmp_path):
    cfg = cfg_for(tmp_path, epochs=1, conditions="III", init_rate=0.3)
    tr = Trainer(cfg, tiny_task(), log=lambda s: None)
    res = tr.fit()
    saved = json.loads((tmp_path / "run/stability.json").read_text())
    assert saved["report"] is not None and "dampening" in saved["report_text"]
    assert all(abs(r - 0.3) <= 0.02 for r in saved["initial_rates"])  # measured on the first training batch
    assert res["stability"]["initial_rates"] == saved["initial_rates"]
    # condition III made the dampening per-neuron; the checkpoint still loads into a fresh model
    assert tr.model.stack.layers[0].spike_fn.dampening.shape == (16,)
    resumed = Trainer(cfg, tiny_task(), log=lambda s: None)
    resumed.fit(resume=True)
    assert torch.equal(resumed.model.stack.layers[0].spike_fn.dampening, tr.model.stack.layers[0].spike_fn.dampening)


def test_default_stabilizes_with_the_recipe_and_warns_about_a_silent_network(tmp_path):
    logs: list[str] = []
    res = Trainer(cfg_for(tmp_path, "auto", epochs=1), tiny_task(), log=logs.append).fit()
    assert res["config"]["conditions"] == ["auto"]
    assert res["stability"]["report"]["conditions"] == ["D", "G"]
    # Randman is a timing code: the sparse start aims at TIMING_SPARSE_RATE; each layer's initial rate is D's
    # target where D reached it, and only a layer where it did not (the 16-wide second layer, fed a few input
    # spikes) is warned about, with D's advice
    layers = res["stability"]["report"]["layers"]
    assert res["stability"]["report"]["regime"]["timing_code"]
    for i, (rate, layer) in enumerate(zip(res["stability"]["initial_rates"], layers)):
        d = layer["conditions"]["D"]
        assert d["target"] == TIMING_SPARSE_RATE
        if d["feasible"]:
            assert abs(rate - d["target"]) <= d["target"] / 3
        else:
            assert any(
                w.startswith(f"layer {i} is nearly silent") and "condition D set" in w
                for w in res["stability"]["warnings"]
            )
    assert len(res["stability"].get("warnings", [])) == sum(
        not layer["conditions"]["D"]["feasible"] for layer in layers
    )
    logs.clear()
    res = Trainer(
        cfg_for(tmp_path, "silent", epochs=1, conditions="none", threshold=100.0), tiny_task(), log=logs.append
    ).fit()
    assert res["stability"]["initial_rates"][0] < 0.01
    assert any("nearly silent" in w for w in res["stability"]["warnings"])
    assert any(line.startswith("warning: layer 0 is nearly silent") for line in logs)


def test_conditions_none_survives_the_config_round_trip_and_resume(tmp_path):
    # regression: config.json stores conditions as a list, and [] was refused when a run was resumed
    cfg = cfg_for(tmp_path, "none", epochs=2, conditions="none")
    assert TrainConfig.from_dict(cfg.to_dict()).conditions == () and TrainConfig(conditions=[]).conditions == ()

    def stop_after_first_epoch(trainer, step):
        if step == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(cfg, tiny_task(), log=lambda s: None, on_step=stop_after_first_epoch).fit()
    res = Trainer(cfg, tiny_task(), log=lambda s: None).fit(resume=True)
    assert res["epochs_done"] == 2 and res["config"]["conditions"] == []
