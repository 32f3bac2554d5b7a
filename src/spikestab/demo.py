"""``spikestab demo``: build a recurrent LIF network, run it on generated spike input and print its
firing rates and surrogate-gradient statistics (offline, seconds)."""

from __future__ import annotations

import argparse

import torch

from .models import SNNClassifier, SNNConfig


def run_demo(seed: int = 0, width: int = 128, steps: int = 100, batch: int = 16, rate: float = 0.1) -> dict:
    torch.manual_seed(seed)
    model = SNNClassifier(SNNConfig(input_size=100, output_size=10, hidden_sizes=(width, width), dropout=0.0))
    x = (torch.rand(steps, batch, 100) < rate).float()
    logits, spikes, volts = model.run(x, record_voltage=True)
    logits.mean(0).logsumexp(-1).sum().backward()
    rows = []
    for i, (layer, z, v) in enumerate(zip(model.stack.layers, spikes, volts)):
        sg = layer.spike_fn.derivative((v - layer.threshold).detach())
        rows.append({
            "layer": i, "rate": z.mean().item(), "sg_mean": sg.mean().item(), "sg_ms": (sg**2).mean().item(),
            "grad_norm_w_hh": layer.weight_hh.grad.norm().item(),
        })
    return {"rows": rows}


def _cmd(args: argparse.Namespace) -> int:
    out = run_demo(seed=args.seed)
    print(f"{'layer':>5} {'rate':>7} {'E[SG]':>8} {'E[SG^2]':>8} {'|dW_hh|':>9}")
    for r in out["rows"]:
        print(f"{r['layer']:>5} {r['rate']:>7.3f} {r['sg_mean']:>8.4f} {r['sg_ms']:>8.4f} {r['grad_norm_w_hh']:>9.3e}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline end-to-end demonstration")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)
