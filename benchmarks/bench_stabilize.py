"""Benchmark of ``stabilize``: a stacked LIF network (default 3 x 1024) on a batch of 32 x 200 random
input spikes, all four conditions, measured mode. Prints a table of where the time goes and writes JSON.

    .venv/bin/python benchmarks/bench_stabilize.py --threads 2 --out benchmarks/results/bench_stabilize.json

Goal (issue 3): total under 5 s on 2 cores, of which the condition functions themselves under 1 s.
``apply`` is the conditions plus the simulations their root finds need (I/II re-simulate the layer),
``measure`` the verification after each layer (rate, variance ratio, Jacobian gains, BPTT growth).
On a shared machine absolute times are noisy, so every row is also given in units of one forward pass
of the same network on the same batch (``fwd``), timed in the same run right after stabilising (at the
stabilised firing rates, which is what the simulations inside ``stabilize`` run at; the forward pass of
the freshly initialised, nearly silent network can be cheaper when a sparse kernel is selected).
``cpu s`` is the process CPU time of the call; with one thread on a machine whose other load steals
time slices, it approximates the wall time on an idle core. ``quiet est s`` = total in forward-pass
units x one forward pass on a quiet machine (``--quiet-forward S`` if known, else the forward pass's
CPU time in the same run). Once-per-process costs (autograd's first-call imports, the event-kernel
build) are paid by a small warm-up call before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from spikestab.models import SNNClassifier, SNNConfig
from spikestab.stability import stabilize


def _setup(width: int, layers: int, batch: int, steps: int, inputs: int, seed: int):
    torch.manual_seed(seed)
    model = SNNClassifier(SNNConfig(inputs, 10, hidden_sizes=(width,) * layers, dropout=0.0))
    x = (torch.rand(steps, batch, inputs, generator=torch.Generator().manual_seed(seed)) < 0.1).float()
    return model, x


def forward_time(model: SNNClassifier, x: torch.Tensor, repeats: int = 3) -> tuple[float, float]:
    """Median wall time and median process CPU time of one gradient-free forward pass."""
    walls, cpus = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def warm_up() -> None:
    """Pay the once-per-process costs before timing: the first ``torch.autograd.grad`` imports
    torch's symbolic-shape machinery (sympy, 2-3 s here), which any training run pays at its first
    backward anyway, and the event-kernel build."""
    model, x = _setup(16, 1, 2, 5, 8, 0)
    stabilize(model, x)


def run(model: SNNClassifier, x: torch.Tensor, mode: str, measure: bool) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    report = stabilize(model, x, mode=mode, measure=measure)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, **report.timings, "report": report.to_dict()}


def _write(path: str, data: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--inputs", type=int, default=700)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/bench_stabilize.json")
    p.add_argument(
        "--quiet-forward",
        type=float,
        default=None,
        help="wall seconds of one forward pass on a quiet machine, for the estimate column",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warm_up()
    rows = []
    for mode, measure in (("measured", True), ("measured", False), ("paper", False)):
        model, x = _setup(args.width, args.layers, args.batch, args.steps, args.inputs, args.seed)
        fwd_init, _ = forward_time(model, x)
        r = run(model, x, mode, measure)
        fwd, fwd_cpu = forward_time(model, x)
        rows.append(
            {
                "mode": mode,
                "measure": measure,
                "forward_s": fwd,
                "forward_cpu_s": fwd_cpu,
                "forward_at_init_s": fwd_init,
                **{k: v for k, v in r.items() if k != "report"},
            }
        )
        rows[-1]["report"] = r["report"]
    print(
        f"stabilize: {args.layers} x {args.width} LIF, batch {args.batch} x {args.steps} steps, "
        f"{args.threads} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    # quiet-machine estimate: total in forward-pass units times one quiet forward pass; without a given
    # one, the forward pass's CPU time (with one thread about its wall time on an idle core)
    head = (
        f"{'mode':<9} {'measure':<8} {'total s':>8} {'(fwd)':>6} {'cpu s':>7} {'conditions s':>13} {'(fwd)':>6} "
        f"{'apply s':>8} {'capture s':>10} {'measure s':>10} {'1 fwd s':>8} {'fwd cpu s':>10} {'quiet est s':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        f = r["forward_s"]
        quiet_fwd = args.quiet_forward if args.quiet_forward is not None else r["forward_cpu_s"]
        r["quiet_estimate_s"] = r["total_s"] / f * quiet_fwd
        r["quiet_conditions_estimate_s"] = r["conditions_s"] / f * quiet_fwd
        print(
            f"{r['mode']:<9} {str(r['measure']):<8} {r['total_s']:>8.2f} {r['total_s'] / f:>6.1f} {r['cpu_s']:>7.2f} "
            f"{r['conditions_s']:>13.3f} {r['conditions_s'] / f:>6.2f} {r['apply_s']:>8.2f} {r['capture_s']:>10.2f} "
            f"{r['measure_s']:>10.2f} {f:>8.3f} {r['forward_cpu_s']:>10.3f} {r['quiet_estimate_s']:>12.2f}"
        )
    _write(
        args.out,
        {
            "config": vars(args),
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
