"""The native backward's sparse adjoint product against the full one (issue 27 item 4), side by side.

A recurrent LIF layer 700 -> 256 (T = 250, B = 32, subtract reset, backend native, one thread) with the
triangular surrogate gradient (bounded support) and Poisson input at ``RATE``. Each row runs the same
forward, then the backward with the sparse adjoint product allowed (``native.SPARSE_ADJOINT_BELOW``, or
``--below``; 1e9 forces it at every step) and forbidden (0), alternating, and keeps the fastest of
``--repeats`` each, in process CPU time (one thread: the work done; the machine is shared). Reported:
the active fraction (non-zero SG entries over all T B H, counted by the C loop), its ratio to the
non-zeros of gI (the input current's gradient, whose zero columns the full product skips), the share of
(row, step) adjoint products that ran sparse, the C time loop's backward alone and the layer's whole
backward (with the weight gradients), full and sparse, their ratios, and the largest relative
difference between the two runs' parameter gradients.

Layers: the one of a one-layer 700 -> 256 classifier with the triangular SG after
``spikestab.stability.stabilize`` (recipe D+G, dense and sparse start; the recipe sets the threshold and
the dampening and keeps the sharpness, 1), then the dense-start layer with other sharpness values.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparse_backward.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from spikestab.files import atomic_write_json, atomic_write_text
from spikestab.kernels import native
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.neurons.layers import LIF
from spikestab.stability import stabilize

STEPS, BATCH, INPUTS, HIDDEN = 250, 32, 700, 256
SHAPE = "triangular"
RATE = 0.05  # input spike density (SHD-like)
# (label, regime, conditions) of the engine settings measured
ENGINE = [
    ("recipe D+G, dense start", "dense", ("D", "G")),
    ("recipe D+G, sparse start", "sparse", ("D", "G")),
]


def poisson_input(steps: int, batch: int, rate: float, seed: int) -> Tensor:
    """Binary input spikes [steps, batch, INPUTS] at ``rate`` per entry."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, INPUTS, generator=g) < rate).float()


def stabilized_layer(regime: str, conditions: tuple[str, ...], seed: int) -> LIF:
    """The LIF layer of a one-layer 700 -> 256 classifier with the triangular SG (sharpness 1, the
    default), after ``stabilize`` with ``conditions`` in ``regime`` on 16 rows of 100 steps of the
    bench's input: its threshold, weights and SG as the engine leaves them."""
    torch.manual_seed(seed)
    cfg = SNNConfig(INPUTS, 20, hidden_sizes=(HIDDEN,), surrogate=SHAPE, dropout=0.0, backend="native")
    model = SNNClassifier(cfg)
    stabilize(model, poisson_input(100, 16, RATE, seed + 1), conditions, regime=regime)
    layer = next(m for m in model.modules() if isinstance(m, LIF))
    layer.requires_grad_(True)
    return layer


def with_sharpness(layer: LIF, sharpness: float) -> LIF:
    """A copy of ``layer`` whose SG has ``sharpness`` (dampening and everything else kept)."""
    out = copy.deepcopy(layer)
    out.spike_fn = layer.spike_fn.with_params(sharpness=sharpness)
    return out


class Spy:
    """Wraps ``native.sequence_backward``: the C loop's time, counts and the non-zeros of the input
    current's gradient gI (its first argument, filled by the call) of the latest call."""

    def __init__(self) -> None:
        self.inner: Callable[..., Any] = native.sequence_backward
        self.seconds, self.counts, self.g_nonzero = 0.0, (0, 0), 0

    def __call__(self, *args: Any) -> Any:
        start = time.process_time()
        out, self.counts = self.inner(*args)
        self.seconds = time.process_time() - start
        self.g_nonzero = int(args[0].count_nonzero())
        return out, self.counts


def one_backward(layer: LIF, x: Tensor, weights: Tensor, spy: Spy, below: float) -> dict[str, Any]:
    """Forward, then the timed backward with ``SPARSE_ADJOINT_BELOW`` = ``below``; times, counts, grads."""
    native.SPARSE_ADJOINT_BELOW = below
    layer.zero_grad(set_to_none=True)
    z, _ = layer(x)
    loss = (weights * z).sum()
    start = time.process_time()
    loss.backward()
    total = time.process_time() - start
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return {"layer_s": total, "loop_s": spy.seconds, "counts": spy.counts, "g_nonzero": spy.g_nonzero, "grads": grads}


def compare(layer: LIF, x: Tensor, repeats: int, below: float) -> dict[str, Any]:
    """Dense and sparse backward of the same forward, alternating; medians, fractions, gradient gap."""
    weights = torch.randn(x.shape[0], x.shape[1], HIDDEN, generator=torch.Generator().manual_seed(3))
    spy = Spy()
    native.sequence_backward = spy
    try:
        runs: dict[str, list[dict[str, Any]]] = {"dense": [], "sparse": []}
        for i in range(repeats + 1):  # the first pair warms up
            for mode in ("dense", "sparse") if i % 2 else ("sparse", "dense"):
                r = one_backward(layer, x, weights, spy, below if mode == "sparse" else 0.0)
                if i:
                    runs[mode].append(r)
    finally:
        native.sequence_backward = spy.inner
        native.SPARSE_ADJOINT_BELOW = below
    d, s = runs["dense"][-1], runs["sparse"][-1]
    gap = max(((s["grads"][n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in d["grads"].items())
    cells = x.shape[0] * x.shape[1] * HIDDEN
    row_steps = x.shape[0] * x.shape[1]

    def best(mode: str, key: str) -> float:  # the least disturbed repeat on a shared machine
        return min(r[key] for r in runs[mode]) * 1e3

    out = {
        "active_fraction": s["counts"][0] / cells,
        "active_per_g_nonzero": s["counts"][0] / max(d["g_nonzero"], 1),
        "sparse_row_steps": s["counts"][1] / row_steps,
        "max_rel_grad_gap": gap,
    }
    for key in ("loop_s", "layer_s"):
        name = key[:-2]
        out[f"{name}_dense_ms"], out[f"{name}_sparse_ms"] = best("dense", key), best("sparse", key)
        out[f"{name}_speedup"] = out[f"{name}_dense_ms"] / out[f"{name}_sparse_ms"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    head = (
        "| layer | sharpness | dampening | active SG | active / gI non-zeros | sparse row-steps "
        "| C loop dense ms | C loop sparse ms | C loop x "
        "| layer bw dense ms | layer bw sparse ms | layer bw x | max rel grad gap |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['layer']} | {r['sharpness']:.3g} | {r['dampening']:.3g} "
        f"| {100 * r['active_fraction']:.1f} % | {r['active_per_g_nonzero']:.2f} | {100 * r['sparse_row_steps']:.0f} % "
        f"| {r['loop_dense_ms']:.1f} | {r['loop_sparse_ms']:.1f} | {r['loop_speedup']:.2f} "
        f"| {r['layer_dense_ms']:.1f} | {r['layer_sparse_ms']:.1f} | {r['layer_speedup']:.2f} "
        f"| {r['max_rel_grad_gap']:.1e} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def measure(label: str, layer: LIF, x: Tensor, a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """One row: ``compare`` on ``layer``, printed as it comes."""
    sg = layer.spike_fn
    r = compare(layer, x, a.repeats, a.below)
    rows.append({"layer": label, "sharpness": float(sg.sharpness), "dampening": float(sg.dampening), **r})
    print(table(rows[-1:]).splitlines()[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharpness", type=float, nargs="+", default=[0.5, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0, 64.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--below", type=float, default=native.SPARSE_ADJOINT_BELOW)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--out", default=None, help="folder for NAME.json and NAME.md")
    ap.add_argument("--name", default="bench_sparse_backward", help="the result files' name")
    a = ap.parse_args()
    torch.set_num_threads(1)
    x = poisson_input(a.steps, BATCH, RATE, seed=2)
    rows: list[dict[str, Any]] = []
    layers = {label: stabilized_layer(regime, conds, seed=1) for label, regime, conds in ENGINE}
    for label, layer in layers.items():
        measure(f"{label} (engine)", layer, x, a, rows)
    for sharp in a.sharpness:
        label = ENGINE[0][0]
        measure(f"{label}, sharpness set", with_sharpness(layers[label], sharp), x, a, rows)
    md = table(rows)
    print(md)
    if a.out:
        meta = {
            "steps": a.steps,
            "batch": BATCH,
            "inputs": INPUTS,
            "hidden": HIDDEN,
            "rate": RATE,
            "below": a.below,
            "threads": 1,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        }
        os.makedirs(a.out, exist_ok=True)
        atomic_write_json({"meta": meta, "rows": rows}, os.path.join(a.out, f"{a.name}.json"))
        atomic_write_text(md, os.path.join(a.out, f"{a.name}.md"))


if __name__ == "__main__":
    main()
