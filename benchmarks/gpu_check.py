"""The one GPU check (issue 24 item 4): at most 8 minutes on one GPU, a JSON file and a table.

1. parity: LIF and ALIF, every reset, float32: spikes, voltages and the gradients (input, W_ih, W_hh,
   tau) of one forward+backward on the device (backend "fused", what "auto" runs off the CPU) against
   the CPU (backend "auto": the C loops), same weights and input. Reported: the fraction of spikes that
   differ and the largest absolute differences; "ok" when they agree to rounding (see ``_agrees``).
2. training: one epoch of ``spikestab train`` (the ``Trainer`` with ``device=``: the recipe's
   stabilisation, AdamW steps, validation, checkpoints, the test) of a 2x128 LIF network on the device
   for sl-MNIST (sklearn's 8x8 digits, offline, latency code) and an SHD-shaped synthetic task (Randman
   with SHD's 700 channels, 250 steps and 20 classes; the real SHD files where ``$SPIKESTAB_DATA/shd``
   holds them); then sl-MNIST again with ``--precision bf16`` (bfloat16 autocast of the projections).
3. timing: the a-lif / a-alif workloads of bench_layers.py (T=250, B=32, 700 -> 256, recurrent),
   forward+backward on the device: spikestab (auto), Norse (LIFRecurrent / LSNNRecurrent, torch.compile)
   and SpikingJelly (LIF in a LinearRecurrentContainer, which steps one time step at a time in torch;
   and, not recurrent, its multi-step LIFNode, for which SpikingJelly 2 picks its own kernel: triton on
   CUDA where importable, recorded as "kernel"), with the peak device memory.

    python benchmarks/gpu_check.py --device cuda --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --tiny        # the dry run the tests use (seconds)

``--tiny`` shrinks every size and skips torch.compile, so the script runs through on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from spikestab.data import load_task
from spikestab.files import read_jsonl
from spikestab.kernels.devices import path_for, resolve_device
from spikestab.neurons import ALIF, LIF, RESETS
from spikestab.train import Trainer
from spikestab.train.config import TrainConfig

BUDGET_S = 480.0  # the whole check, on one GPU
TAU, THRESHOLD, TAU_ADAPT, BETA_ADAPT, DT = 20.0, 1.0, 100.0, 1.8, 1e-3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- 1. parity


def _one_pass(layer: nn.Module, x: Tensor, readout: Tensor) -> dict[str, Tensor]:
    """Spikes, voltages and gradients of one forward+backward, on the CPU for comparison."""
    x = x.clone().requires_grad_(True)
    z, v, _ = layer(x, return_voltage=True)
    ((z + 0.1 * v) * readout).sum().backward()
    out = {"spikes": z, "voltages": v, "grad_x": x.grad}
    out.update({f"grad_{n}": p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return {k: t.detach().cpu() for k, t in out.items()}


def _agrees(mismatch: float, diffs: dict[str, float], scale: dict[str, float]) -> bool:
    """Equal to rounding: under 0.1 % of spikes flip (a voltage within a rounding of its threshold) and
    every other quantity within 1e-3 of its own largest magnitude."""
    return mismatch <= 1e-3 and all(diffs[k] <= 1e-3 * max(scale[k], 1.0) for k in diffs)


def parity(device: torch.device, tiny: bool) -> list[dict]:
    """Device against CPU for LIF and ALIF, every reset, float32 (module doc, item 1)."""
    steps, batch, inputs, hidden = (20, 4, 16, 12) if tiny else (250, 32, 700, 256)
    rows = []
    for cls in (LIF, ALIF):
        for reset in RESETS:
            torch.manual_seed(0)
            cpu = cls(inputs, hidden, reset=reset, detach_reset=False, learn_tau=True)
            dev = copy.deepcopy(cpu).to(device)
            dev.backend = "fused"  # what "auto" runs off the CPU; on the CPU (the dry run) the torch loop too
            gen = torch.Generator().manual_seed(1)
            x = (torch.rand(steps, batch, inputs, generator=gen) < 0.05).float()
            readout = torch.randn(steps, batch, hidden, generator=gen)
            a = _one_pass(cpu, x, readout)
            b = _one_pass(dev, x.to(device), readout.to(device))
            mismatch = (a["spikes"] != b["spikes"]).float().mean().item()
            keys = [k for k in a if k != "spikes"]
            diffs = {k: (a[k] - b[k]).abs().max().item() for k in keys}
            scale = {k: a[k].abs().max().item() for k in keys}
            rows.append(
                {
                    "neuron": cls.__name__,
                    "reset": reset,
                    "cpu_path": path_for("cpu", torch.float32),
                    "device_path": path_for(device, torch.float32, dev.backend),
                    "spike_mismatch": mismatch,
                    "max_abs_diff": diffs,
                    "ok": _agrees(mismatch, diffs, scale),
                }
            )
    return rows


# ---------------------------------------------------------------- 2. training


def _tasks(tiny: bool) -> dict[str, tuple[dict, Callable[[], object]]]:
    """sl-MNIST (offline digits) and SHD (its files where present, else an SHD-shaped Randman): each the
    TrainConfig fields naming it and a loader of the task."""
    per_class = 30 if tiny else 200
    shd_like = dict(n_classes=20, n_units=700, n_steps=250, samples_per_class=per_class)
    if tiny:
        shd_like.update(n_units=40, n_steps=30)

    def shd() -> tuple[dict, object]:
        try:
            return {"task": "shd"}, load_task("shd")
        except FileNotFoundError:
            return {"task": "randman", "task_options": shd_like}, load_task("randman", **shd_like)

    def mnist() -> tuple[dict, object]:
        return {"task": "sl-mnist", "task_options": {"source": "digits"}}, load_task("sl-mnist", source="digits")

    return {"sl-mnist": mnist, "shd": shd}


def train_epoch(fields: dict, task, device: torch.device, hidden: int, batch: int) -> dict:
    """One epoch of ``spikestab train``'s Trainer on ``device`` (the recipe's stabilisation on the first
    batch, AdamW steps, validation, the test of the best weights; the run folder in a temporary folder),
    as the run's results.json and metrics.jsonl say it went."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            **fields,
            layers=(hidden, hidden),
            epochs=1,
            batch_size=batch,
            lr=2e-3,
            device=str(device),
            out=str(Path(tmp) / "run"),
            progress=False,
            checkpoint_every=10**6,  # the epoch's end checkpoints (a round trip through the CPU)
        )
        t0 = time.perf_counter()
        results = Trainer(cfg, task, log=lambda _: None).fit()
        wall_s = time.perf_counter() - t0
        losses = [r["loss"] for r in read_jsonl(Path(cfg.out) / "metrics.jsonl") if r["kind"] == "step"]
    return {
        "data": f"{task.name} ({task.info.get('source', 'files')})",
        "epochs": results["epochs_done"],
        "steps": len(losses),
        "batch_size": batch,
        "train_samples": len(task.train),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "finite": all(math.isfinite(v) for v in losses),
        "test_accuracy": results["test"]["accuracy"],
        "train_s": results["train_seconds"],
        "wall_s": wall_s,
        "device": results["device"],
        "path": results["kernel"],
    }


def training(device: torch.device, tiny: bool) -> list[dict]:
    """One epoch per task in float32, then sl-MNIST again with ``--precision bf16`` (on the fused kernel,
    which backend auto takes on a GPU; named, so that the CPU's dry run takes it too)."""
    hidden, batch = (16, 256) if tiny else (128, 64)
    rows = []
    for name, load in _tasks(tiny).items():
        fields, task = load()
        rows.append({"task": name, "precision": "32", **train_epoch(fields, task, device, hidden, batch)})
    fields, task = _tasks(tiny)["sl-mnist"]()
    bf16 = {**fields, "precision": "bf16", "backend": "fused"}
    rows.append({"task": "sl-mnist", "precision": "bf16", **train_epoch(bf16, task, device, hidden, batch)})
    return rows


# ---------------------------------------------------------------- 3. timing against the peers


def _weights(inputs: int, hidden: int, steps: int, batch: int, device: torch.device) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)

    def glorot(rows: int, cols: int) -> Tensor:
        return (torch.rand(rows, cols, generator=gen) * 2 - 1) * math.sqrt(6.0 / (rows + cols))

    data = {
        "x": (torch.rand(steps, batch, inputs, generator=gen) < 0.05).float(),
        "w_in": glorot(hidden, inputs),
        "w_rec": glorot(hidden, hidden).fill_diagonal_(0.0),
    }
    return {k: v.to(device) for k, v in data.items()}


def _spikestab(d: dict[str, Tensor], adaptive: bool, compiled: bool) -> tuple[Callable[[], Tensor], list[Tensor]]:
    kw = dict(tau_adapt=TAU_ADAPT, beta_adapt=BETA_ADAPT) if adaptive else {}
    layer = (ALIF if adaptive else LIF)(d["w_in"].shape[1], d["w_in"].shape[0], tau=TAU, threshold=THRESHOLD, **kw)
    layer.to(d["x"].device)
    with torch.no_grad():
        layer.weight_ih.copy_(d["w_in"])
        layer.weight_hh.copy_(d["w_rec"])
    return (lambda: layer(d["x"])[0]), [layer.weight_ih, layer.weight_hh]


def _norse(d: dict[str, Tensor], adaptive: bool, compiled: bool) -> tuple[Callable[[], Tensor], list[Tensor]]:
    import norse.torch as norse

    k = 1.0 - math.exp(-1.0 / TAU)
    dev = d["x"].device
    common = dict(
        tau_syn_inv=torch.as_tensor(1.0 / DT, device=dev),
        tau_mem_inv=torch.as_tensor(k / DT, device=dev),
        v_leak=torch.as_tensor(0.0, device=dev),
        v_th=torch.as_tensor(THRESHOLD, device=dev),
        v_reset=torch.as_tensor(0.0, device=dev),
        method="super",
        alpha=1.0,
    )
    hidden, inputs = d["w_in"].shape
    if adaptive:
        rho = math.exp(-1.0 / TAU_ADAPT)
        p = norse.LSNNParameters(
            tau_adapt_inv=torch.as_tensor((1.0 - rho) / DT, device=dev),
            beta=torch.as_tensor(BETA_ADAPT * (1.0 - rho) / rho, device=dev),
            **common,
        )
        module = norse.LSNNRecurrent(inputs, hidden, p=p, autapses=False, dt=DT)
    else:
        module = norse.LIFRecurrent(inputs, hidden, p=norse.LIFParameters(**common), autapses=False, dt=DT)
    module.to(dev)
    with torch.no_grad():
        module.input_weights.copy_(d["w_in"] / k)
        module.recurrent_weights.copy_(d["w_rec"] / k)
    fn = torch.compile(module) if compiled else module
    return (lambda: fn(d["x"])[0]), [module.input_weights, module.recurrent_weights]


def _sj_node(step_mode: str):
    from spikingjelly.activation_based import neuron, surrogate

    tau = 1.0 / (1.0 - math.exp(-1.0 / TAU))
    return neuron.LIFNode(
        tau=tau,
        decay_input=False,
        v_threshold=THRESHOLD,
        v_reset=0.0,
        surrogate_function=surrogate.Sigmoid(),
        detach_reset=True,
        step_mode=step_mode,
    )


def _spikingjelly(d: dict[str, Tensor], adaptive: bool, compiled: bool) -> tuple[Callable[[], Tensor], list[Tensor]]:
    from spikingjelly.activation_based import functional, layer

    hidden = d["w_in"].shape[0]
    w_in = d["w_in"].clone().requires_grad_(True)
    module = layer.LinearRecurrentContainer(_sj_node("s"), hidden, hidden, bias=False, step_mode="m")
    module.to(d["x"].device)
    with torch.no_grad():
        module.rc.weight.copy_(torch.cat([torch.eye(hidden, device=d["x"].device), d["w_rec"]], dim=1))

    def run() -> Tensor:
        functional.reset_net(module)
        return module(d["x"] @ w_in.t())

    return run, [w_in, module.rc.weight]


def _spikingjelly_multistep(d: dict[str, Tensor], adaptive: bool, compiled: bool):
    """SpikingJelly's multi-step LIFNode (its own kernel choice), feed-forward: not recurrent."""
    from spikingjelly.activation_based import functional

    node = _sj_node("m").to(d["x"].device)
    w_in = d["w_in"].clone().requires_grad_(True)

    def run() -> Tensor:
        functional.reset_net(node)
        return node(d["x"] @ w_in.t())

    return run, [w_in]


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _time(run: Callable[[], Tensor], params: list[Tensor], device: torch.device, reps: int) -> dict:
    """Median forward+backward seconds over ``reps`` after two warm-up calls, and the peak memory."""

    def once() -> None:
        for p in params:
            p.grad = None
        run().sum().backward()

    once()
    once()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"fwd_bwd_s": statistics.median(times), "peak_mib": peak}


def timing(device: torch.device, tiny: bool) -> list[dict]:
    steps, batch, inputs, hidden, reps = (20, 4, 16, 12, 2) if tiny else (250, 32, 700, 256, 10)
    compiled = not tiny
    sj_kernel = "triton" if device.type == "cuda" and _triton_importable() else "torch"
    entries: dict[str, Callable] = {
        "spikestab auto": _spikestab,
        f"Norse {'compiled' if compiled else 'eager (--tiny)'}": _norse,
        "SpikingJelly recurrent container": _spikingjelly,
        "SpikingJelly multi-step (feed-forward)": _spikingjelly_multistep,
    }
    rows = []
    for workload, adaptive in (("a-lif", False), ("a-alif", True)):
        d = _weights(inputs, hidden, steps, batch, device)
        for name, build in entries.items():
            row = {"workload": workload, "entry": name}
            if name.startswith("spikestab"):
                row["kernel"] = path_for(device, torch.float32)
            elif name.startswith("SpikingJelly"):
                row["kernel"] = sj_kernel if "multi-step" in name else "torch"
            if adaptive and name.startswith("SpikingJelly"):
                continue  # SpikingJelly has no adaptive-threshold neuron
            try:
                row.update(_time(*build(d, adaptive, compiled), device, reps))
            except ImportError as err:
                row["skipped"] = f"not installed: {err.name}"
            except Exception as err:  # one peer failing on the device must not lose the others' numbers
                row["skipped"] = f"failed: {type(err).__name__}: {err}"
            rows.append(row)
    return rows


# ---------------------------------------------------------------- report


def table(result: dict) -> str:
    """The result as plain-text tables."""
    lines = [f"device {result['device']} ({result['device_name']}), {result['total_s']:.1f} s", "", "parity"]
    for r in result["parity"]:
        worst = max(r["max_abs_diff"].values())
        lines.append(
            f"  {r['neuron']:<5} {r['reset']:<19} {r['cpu_path']}->{r['device_path']:<9} "
            f"spikes differ {r['spike_mismatch']:.2e}  max |diff| {worst:.2e}  {'ok' if r['ok'] else 'DIFFERS'}"
        )
    lines += ["", "training"]
    for r in result["training"]:
        lines.append(
            f"  {r['task']:<9} {r['precision']:<4} 1 epoch, {r['steps']} steps  "
            f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  "
            f"test acc {r['test_accuracy']:.3f}  {r['train_s']:.1f} s training, {r['wall_s']:.1f} s in all  "
            f"({r['data']}, {r['path']})"
        )
    lines += ["", "forward+backward"]
    for r in result["timing"]:
        if "skipped" in r:
            lines.append(f"  {r['workload']:<7} {r['entry']:<42} {r['skipped']}")
            continue
        mem = f"{r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else "-"
        lines.append(f"  {r['workload']:<7} {r['entry']:<42} {1e3 * r['fwd_bwd_s']:8.1f} ms  {mem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, no torch.compile: a dry run")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON (default: print only)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    if args.out is not None and args.out.suffix != ".json":
        parser.error(f"--out must name a .json file, got {args.out}")
    t0 = time.perf_counter()
    result: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "tiny": args.tiny,
    }
    for name, section in (("parity", parity), ("training", training), ("timing", timing)):
        result[name] = section(device, args.tiny)
        result["total_s"] = time.perf_counter() - t0
        result["within_budget"] = result["total_s"] <= BUDGET_S
        if args.out is not None:  # after every section: a run cut short keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0 if all(r["ok"] for r in result["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main())
