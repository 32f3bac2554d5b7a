"""The recipe's regime decision, alone (no training), for every headline and regime-check configuration
and seeds 0-2: the first layer's count readability at rate 1/2 and at the best threshold, their ratio, the
input's own readability, and the regime (docs/results/stability_choice.md, section 5). Seconds per
configuration; the decisions are those the `auto` runs of experiments/headline.py and regime_check.py make.

    python experiments/regime_decisions.py --shd-dir runs/shd_synth

Writes docs/results/stability_choice/regime_decisions.jsonl (one line per configuration and seed).
"""

from __future__ import annotations

import argparse
import json
import time

import common
import headline
import regime_check
import torch

from spikestab.neurons.layers import spiking_layers
from spikestab.stability.regime import choose_regime
from spikestab.train.config import TrainConfig
from spikestab.train.trainer import Trainer


def configs() -> dict[str, dict]:
    """name -> the fixed training options (cpu scale) of every configuration the two experiments run."""
    out = {
        name: {"task": task, "net": net, "layers": layers} for name, (task, net, layers, _) in headline.CONFIGS.items()
    }
    out["shd-lif-256"] = {"task": "shd", "net": "lif", "layers": "2x256"}
    for name, (task, extra) in regime_check.CONFIGS.items():
        out.setdefault(name, {"task": task, **extra})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shd-dir", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = []
    for name, spec in configs().items():
        spec = dict(spec)
        task = spec.pop("task")
        for seed in (0, 1, 2):
            fixed = {
                **common.task(task, "cpu", args.shd_dir),
                **spec,
                "seed": seed,
                "conditions": "auto",
                "out": str(common.RUNS / "regime_decisions"),
            }
            trainer = Trainer(TrainConfig(**fixed), log=lambda s: None)
            trainer.model.eval()
            t0 = time.perf_counter()
            choice = choose_regime(trainer.model, spiking_layers(trainer.model)[0], *trainer.probe_set())
            row = {
                "config": name,
                "seed": seed,
                **{k: v for k, v in choice.to_dict().items() if k != "scan"},
                "seconds": round(time.perf_counter() - t0, 2),
            }
            lines.append(json.dumps(row))
            print(f"{name} seed {seed}: {choice}", flush=True)
    path = common.RESULTS / "stability_choice" / "regime_decisions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
