"""Tables for docs/results/stability.md: what each stability condition achieves, measured on the built
network, in measured and paper mode, plus firing-rate calibration by root find vs bias training.

    .venv/bin/python benchmarks/stability_tables.py --out benchmarks/results/stability_tables.json > tables.md

Measured-mode rows use exactly the setting of tests/test_stability_conditions.py (paper_defaults preset,
dampening 2, T = 200, B = 4, input width = layer width).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from spikestab.init import calibrate_firing_rate, train_bias_for_rate
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons import RESETS
from spikestab.presets import paper_config, paper_defaults
from spikestab.stability import PAPER_CONDITIONS, measure_firing_rate, stabilize

INPUT_RATES = {"subtract": 0.05, "multiplicative": 0.1, "multiplicative_all": 0.2, "none": 0.3}


def _spikes(steps: int, batch: int, width: int, rate: float, seed: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, width, generator=gen) < rate).float()


def _preset_model(net: str, reset: str, width: int, n_in: int, dampening: float, surrogate: str = "fast-sigmoid"):
    cfg = paper_config(n_in, 5, (width,), net=net, reset=reset, dropout=0.0, dampening=dampening, surrogate=surrogate)
    return paper_defaults(SNNClassifier(cfg), seq_len=200, seed=11)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def measured_matrix(widths: list[int]) -> list[dict]:
    rows = []
    for width in widths:
        for net in ("lif", "alif"):
            for reset in RESETS:
                x = _spikes(200, 4, width, INPUT_RATES[reset])
                torch.manual_seed(0)
                a = stabilize(_preset_model(net, reset, width, width, 2.0), x, ("I", "II")).layers[0].measurements
                b = stabilize(_preset_model(net, reset, width, width, 2.0), x, ("III",)).layers[0].measurements
                c_layer = stabilize(_preset_model(net, reset, width, width, 2.0), x, ("IV",)).layers[0]
                model, x3 = _preset_model(net, reset, width, width, 2.0), _spikes(200, 4, width, 0.3)
                stabilize(model, x3, ("I", "II"))
                d_layer = stabilize(model, x3, ("IV",)).layers[0]
                iv = d_layer.condition("IV")
                rows.append(
                    {
                        "net": net,
                        "reset": reset,
                        "width": width,
                        "rate_after_I": a["firing_rate"],
                        "ratio_after_II": a["variance_ratio"],
                        "worst_gain_after_III": b["worst_case_gain"],
                        "growth_after_III": b["growth_per_step"],
                        "ms_gain_after_IV": c_layer.measurements["mean_square_gain"],
                        "growth_after_IV": c_layer.measurements["growth_per_step"],
                        "ms_gain_after_I_II_IV": d_layer.measurements["mean_square_gain"],
                        "growth_after_I_II_IV": d_layer.measurements["growth_per_step"],
                        "IV_feasible_after_I_II": iv.feasible,
                        "uniform_mode_gain_after_I_II_IV": iv.extra["uniform_mode_gain"],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def default_settings(width: int) -> list[dict]:
    """spikestab's own defaults (tau = 20 steps, threshold 1): measured mode, all four conditions."""
    rows = []
    for net in ("lif", "alif"):
        for reset in RESETS:
            torch.manual_seed(3)
            model = SNNClassifier(
                SNNConfig(100, 5, hidden_sizes=(width,), dropout=0.0, net=net, reset=reset, dampening=2.0)
            )
            x = _spikes(200, 4, 100, 0.15)
            stabilize(model, x, ("I", "II"))
            layer = stabilize(model, x, ("IV",)).layers[0]
            m = layer.measurements
            rows.append(
                {
                    "net": net,
                    "reset": reset,
                    "width": width,
                    "rate": m["firing_rate"],
                    "ratio": m["variance_ratio"],
                    "ms_gain": m["mean_square_gain"],
                    "growth": m["growth_per_step"],
                    "alpha": float(model.stack.layers[0].alpha.mean()),
                }
            )
    return rows


def paper_mode(widths: list[int]) -> list[dict]:
    """Paper mode under the preset (dampening 1 as in the paper): how far the formulas land."""
    rows = []
    for width in widths:
        for net in ("lif", "alif"):
            for reset in RESETS:
                x = _spikes(200, 4, 80, 0.1)
                model = _preset_model(net, reset, width, 80, 1.0, surrogate="exponential")
                rep = stabilize(model, x, PAPER_CONDITIONS, mode="paper").layers[0]
                m = rep.measurements
                rows.append(
                    {
                        "net": net,
                        "reset": reset,
                        "width": width,
                        "rate": m["firing_rate"],
                        "ratio": m["variance_ratio"],
                        "dampening": rep.condition("III").chosen_mean,
                        "worst_gain": m["worst_case_gain"],
                        "IV_feasible": rep.condition("IV").feasible,
                        "sharpness": rep.condition("IV").chosen_mean,
                        "IV_residual_at_1": rep.condition("IV").extra["residual_at_sharpness_1"],
                        "ms_gain": m["mean_square_gain"],
                        "growth": m["growth_per_step"],
                    }
                )
    return rows


def calibration() -> list[dict]:
    rows = []
    x = _spikes(150, 6, 40, 0.1, seed=4)
    for f0 in (0.05, 0.3, 0.5, 0.9):
        torch.manual_seed(3)
        model = SNNClassifier(SNNConfig(40, 5, hidden_sizes=(64, 64), dropout=0.0))
        before = measure_firing_rate(model, x)
        root = calibrate_firing_rate(model, x, rate=f0)
        torch.manual_seed(3)
        model = SNNClassifier(SNNConfig(40, 5, hidden_sizes=(64, 64), dropout=0.0))
        trained = train_bias_for_rate(model, x, rate=f0, steps=300, lr=0.05)
        rows.append(
            {
                "f0": f0,
                "rates_before": before,
                "root_rates": [r["rate"] for r in root],
                "root_simulations": sum(r["simulations"] for r in root),
                "adam_rates": trained["rates"],
                "adam_steps": trained["steps"],
                "adam_within_tol": trained["feasible"],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", default="64,256")
    p.add_argument("--out", default="benchmarks/results/stability_tables.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    data = {
        "measured": measured_matrix(widths),
        "defaults": default_settings(64),
        "paper": paper_mode([128, 256]),
        "calibration": calibration(),
    }
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, args.out)
    print(
        "| net | reset | width | rate after I | ratio after II | worst gain after III | growth after III | "
        "ms gain after IV | growth after IV | ms gain after I,II,IV | growth after I,II,IV | IV feasible | "
        "uniform-mode gain |"
    )
    print("|" + "---|" * 13)
    for r in data["measured"]:
        print(
            f"| {r['net']} | {r['reset']} | {r['width']} | {_fmt(r['rate_after_I'])} | {_fmt(r['ratio_after_II'])} | "
            f"{r['worst_gain_after_III']:.6f} | {_fmt(r['growth_after_III'])} | {_fmt(r['ms_gain_after_IV'])} | "
            f"{_fmt(r['growth_after_IV'])} | {_fmt(r['ms_gain_after_I_II_IV'])} | {_fmt(r['growth_after_I_II_IV'])} | "
            f"{'yes' if r['IV_feasible_after_I_II'] else 'NO'} | {_fmt(r['uniform_mode_gain_after_I_II_IV'])} |"
        )
    print("\n| net | reset | width | alpha | rate | ratio | ms gain | growth |\n|---|---|---|---|---|---|---|---|")
    for r in data["defaults"]:
        print(
            f"| {r['net']} | {r['reset']} | {r['width']} | {r['alpha']:.3f} | {_fmt(r['rate'])} | {_fmt(r['ratio'])} | "
            f"{_fmt(r['ms_gain'])} | {_fmt(r['growth'])} |"
        )
    print(
        "\n| net | reset | width | rate | var ratio | dampening | worst gain | IV feasible | sharpness | "
        "IV residual at 1 | ms gain | growth |"
    )
    print("|" + "---|" * 12)
    for r in data["paper"]:
        print(
            f"| {r['net']} | {r['reset']} | {r['width']} | {_fmt(r['rate'])} | {_fmt(r['ratio'])} | "
            f"{r['dampening']:.4f} | "
            f"{_fmt(r['worst_gain'])} | {'yes' if r['IV_feasible'] else 'NO'} | {r['sharpness']:.3f} | "
            f"{r['IV_residual_at_1']:.4f} | {_fmt(r['ms_gain'])} | {_fmt(r['growth'])} |"
        )
    print(
        "\n| f0 | rates before | root-find rates | simulations | Adam rates | Adam steps | Adam within 0.02 |"
        "\n|---|---|---|---|---|---|---|"
    )
    for r in data["calibration"]:
        print(
            f"| {r['f0']} | {', '.join(f'{v:.3f}' for v in r['rates_before'])} | "
            f"{', '.join(f'{v:.3f}' for v in r['root_rates'])} | "
            f"{r['root_simulations']} | {', '.join(f'{v:.3f}' for v in r['adam_rates'])} | {r['adam_steps']} | "
            f"{r['adam_within_tol']} |"
        )


if __name__ == "__main__":
    main()
