"""Exploration harness behind the recommended recipe (single seeds; kept so that the numbers in
docs/results/stability_choice.md can be re-run). Trains sl-MNIST (5k, 2 x 64 LIF, 3 epochs, lr 2e-3,
batch 32) after one pre-training recipe and prints a JSON line: test/val accuracy, and per layer the
initial rate, membrane mean and spread relative to the threshold, silent fraction, BPTT growth, the
mean gradient norm over the first 100 steps.

    python experiments/explore_recipe.py '{"dampening": 0.1, "recipe": {"thr_rate": 0.5}}'

Recipe keys (applied in this order): in_scale / rec_scale (multiply W_ih / W_hh), drive (scale W_ih so
the input-driven membrane spread is that many thresholds), thr_drive (threshold = input-driven spread /
value), thr_rate (threshold for that initial rate: what condition D became), rate (+ per_neuron: bias
calibration), conds (spikestab.stability conditions), sharp_std (sharpness = value / spread of v - A),
growth (dampening for that BPTT growth per step: what condition G became). Other keys of the JSON are
TrainConfig fields.
"""

import json
import math
import shutil
import sys
import time

import torch

from spikestab.init import calibrate_firing_rate
from spikestab.neurons.layers import spiking_layers
from spikestab.stability import measure_gradient_growth, stabilize
from spikestab.stability.measure import layer_input, record
from spikestab.train.config import TrainConfig
from spikestab.train.metrics import read_jsonl
from spikestab.train.trainer import Trainer


def input_spread(layer, x) -> float:
    """Std of the membrane driven by the layer's input alone (leaky integration of W_ih x, no spikes)."""
    with torch.no_grad():
        current, v, vs = torch.nn.functional.linear(x, layer.weight_ih), 0.0, []
        for t in range(current.shape[0]):
            v = layer.alpha * v + current[t]
            vs.append(v)
        return torch.stack(vs).std().item()


def bisect_log(f, lo: float, hi: float, steps: int = 16) -> float:
    """x in [lo, hi] (log scale) where the increasing f crosses 0."""
    lo, hi = math.log(lo), math.log(hi)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if f(math.exp(mid)) > 0 else (mid, hi)
    return math.exp(0.5 * (lo + hi))


def stats(model, batch) -> list[dict]:
    out = []
    for i, layer in enumerate(spiking_layers(model)):
        x = layer_input(model, batch, i)
        t, thr = record(layer, x), layer.threshold.mean().item()
        per_neuron = t.z.mean((0, 1))
        out.append(
            dict(
                rate=t.rate,
                v_mean=t.v.mean().item() / thr,
                v_std=t.v.std().item() / thr,
                rate_std_neuron=per_neuron.std().item(),
                silent=(per_neuron < 0.01).float().mean().item(),
                sat=(per_neuron > 0.99).float().mean().item(),
                in_cur_std=t.current.std().item() / thr,
                damp=layer.spike_fn.dampening.mean().item(),
                sharp=float(layer.spike_fn.sharpness.mean()),
                thr=thr,
                growth=measure_gradient_growth(layer, x)["growth_per_step"],
            )
        )
    return out


def apply(recipe: dict, model, batch) -> None:
    layers = spiking_layers(model)
    with torch.no_grad():
        for layer in layers:
            layer.weight_ih.mul_(recipe.get("in_scale", 1.0))
            if layer.weight_hh is not None:
                layer.weight_hh.mul_(recipe.get("rec_scale", 1.0))
    for i, layer in enumerate(layers):
        x = layer_input(model, batch, i)
        with torch.no_grad():
            if "drive" in recipe:
                layer.weight_ih.mul_(recipe["drive"] * layer.threshold.mean().item() / input_spread(layer, x))
            if "thr_drive" in recipe:
                layer.threshold.fill_(input_spread(layer, x) / recipe["thr_drive"])
            if "thr_rate" in recipe:

                def excess(theta):
                    layer.threshold.fill_(theta)
                    return recipe["thr_rate"] - record(layer, x).rate

                layer.threshold.fill_(bisect_log(excess, 1e-3, 10.0))
    if "rate" in recipe:
        calibrate_firing_rate(model, batch, rate=recipe["rate"], per_neuron=recipe.get("per_neuron", False))
    if recipe.get("conds"):
        stabilize(model, batch, conditions=recipe["conds"], mode=recipe.get("mode", "measured"))
    for i, layer in enumerate(layers):
        x = layer_input(model, batch, i)
        if "sharp_std" in recipe:
            t = record(layer, x)
            layer.spike_fn = layer.spike_fn.with_params(
                sharpness=torch.tensor(recipe["sharp_std"] / (t.v - t.thr).std().item())
            )
        if "growth" in recipe:
            fn = layer.spike_fn

            def excess(d):
                layer.spike_fn = fn.with_params(dampening=torch.tensor(d))
                return measure_gradient_growth(layer, x)["growth_per_step"] - recipe["growth"]

            layer.spike_fn = fn.with_params(dampening=torch.tensor(bisect_log(excess, 1e-4, 10.0, 14)))


def main() -> None:
    spec = json.loads(sys.argv[1])
    recipe = spec.pop("recipe", {})
    base = dict(
        task="sl-mnist",
        layers=(64, 64),
        epochs=3,
        lr=2e-3,
        batch_size=32,
        threads=1,
        progress=False,
        checkpoint_every=10000,
        conditions="none",
    )
    base.update(spec)
    base["out"] = "runs/explore/" + str(abs(hash(json.dumps([spec, recipe], sort_keys=True))))
    shutil.rmtree(base["out"], ignore_errors=True)
    cfg = TrainConfig(**base)
    tr = Trainer(cfg, log=lambda s: None)

    def stabilize_hook() -> dict:
        batch = tr.first_batch()
        tr.model.eval()
        apply(recipe, tr.model, batch)
        with torch.no_grad():
            initial = stats(tr.model, batch)
        tr.model.train()
        tr.optimizer = tr._make_optimizer()
        return {"initial": initial}

    tr.stabilize = stabilize_hook
    t0 = time.time()
    res = tr.fit()
    recs = read_jsonl(cfg.out + "/metrics.jsonl")
    norms = [r["layer_grad_norms"] for r in recs if r["kind"] == "step"][:100]
    print(
        json.dumps(
            dict(
                spec=spec,
                recipe=recipe,
                test=res["test"]["accuracy"],
                val=res["val"]["accuracy"],
                init=res["stability"]["initial"],
                grad100=[sum(n[i] for n in norms) / len(norms) for i in range(len(norms[0]))],
                final_rates=res["test"]["rates"],
                val_curve=[r["val_accuracy"] for r in recs if r["kind"] == "epoch"],
                secs=round(time.time() - t0, 1),
            )
        )
    )


if __name__ == "__main__":
    main()
