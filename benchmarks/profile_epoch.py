"""Where one training epoch's time goes: a per-component breakdown of ``spikestab train``'s epoch (issue 27).

The three configurations of ``bench_train.py`` (sl-MNIST 5k 2x128 LIF, SHD-shaped 2x256 LIF and ALIF), each
trained through the library's own ``Trainer`` (the loop ``spikestab train`` runs: its loader, dropout, the
per-step cross-entropy, gradient norms, clipping, AdamW, the step records), one torch thread (``--threads``;
with more, a stage's CPU time counts the calling thread's only). Nothing in
``train/`` is changed for the profile: the trainer's stages are wrapped from outside (module functions and
instance methods replaced for the timed epochs, restored afterwards) and timed by explicit clocks:

- data: producing each batch (``train_batches``: the loader's [T, B, N] batch, dense or, where that pays,
  sparse COO);
- forward: each layer's input projection (``sequence_current``: x W^T + b, event-driven where it pays) and
  time loop (the kernel it returns), the dropout before each layer, the readout, the rest of
  ``model.simulate`` (input checks, states);
- loss; backward, split by gradient hooks into loss, readout, and each layer's time loop and input
  projection (the hooks fire as the backward pass reaches each tensor);
- optimizer: clipping (``apply_update`` less the step) and the AdamW step;
- metrics: gradient norms and finiteness, the update's finiteness check, the step record
  (metrics.jsonl) and the epoch totals (accuracy counts);
- the rest: Python between the stages inside ``train_step`` (zero_grad, the spike rates' ``.item()``) and
  in the trainer's loop between steps.

Every stage's time is exclusive (a stage entered inside another is not counted in the outer one), so the
stages add up to the epoch. Wall time (``perf_counter``) and this thread's CPU time (``thread_time``; with one
torch thread the C kernels and the backward pass run on it) are both recorded. Before the timed epochs the
model is stabilised as ``spikestab train`` does (the recipe, ``--conditions auto``) so that the spike
rates, which decide the event-driven paths' cost, are those of a real run; one untimed step warms up.

Each configuration is profiled with ``spikestab train``'s default dropout and without (bench_train's loop),
both as the epoch ran before issue 27's changes (``epoch_path``: torch's dropout, batches built densely)
and now. Side by side, the same run before and now trains alternating epochs in one process: the ratio of
their epoch times, and whether both ended on bitwise the same weights.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/profile_epoch.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # the three configurations

from spikestab import data
from spikestab.files import atomic_write_json, atomic_write_text
from spikestab.train import nonfinite, step
from spikestab.train import trainer as trainer_module
from spikestab.train.config import TrainConfig
from spikestab.train.trainer import Trainer

DEFAULT_DROPOUT = TrainConfig.__dataclass_fields__["dropout"].default  # spikestab train's

# the stages in the order of one step; {i}: the layer (1-based)
DATA = "data: batch preparation"
LOOP = "trainer loop (Python between steps)"
STEP_REST = "train_step: other Python (zero_grad, rates)"
DROPOUT = "forward: dropout"
STACK = "forward: stack (input checks, states)"
READOUT = "forward: readout"
LOSS = "forward: loss"
BACKWARD = "backward: other"
BW_LOSS = "backward: loss"
BW_READOUT = "backward: readout"
BW_DROPOUT = "backward: dropout"
CLIP = "optimizer: clipping"
ADAMW = "optimizer: AdamW step"
NORMS = "metrics: gradient norms, finiteness"
UPDATE_CHECK = "metrics: update finiteness check"
RECORD = "metrics: step record (metrics.jsonl)"
TOTALS = "metrics: epoch totals, accuracy"
CHECKPOINT = "checkpoint"


def projection(i: int) -> str:
    return f"forward: input projection L{i}"


def time_loop(i: int) -> str:
    return f"forward: time loop L{i}"


def bw_time_loop(i: int) -> str:
    return f"backward: time loop L{i}"


def bw_projection(i: int) -> str:
    return f"backward: input projection L{i}"


def stage_order(n_layers: int) -> list[str]:
    """Every stage's label, in the order of one step."""
    layers = range(1, n_layers + 1)
    return [
        DATA,
        *[s for i in layers for s in (projection(i), time_loop(i))],
        DROPOUT,
        READOUT,
        STACK,
        LOSS,
        BW_LOSS,
        BW_READOUT,
        *[s for i in reversed(layers) for s in (bw_time_loop(i), bw_projection(i))],
        BW_DROPOUT,
        BACKWARD,
        CLIP,
        ADAMW,
        NORMS,
        UPDATE_CHECK,
        RECORD,
        TOTALS,
        CHECKPOINT,
        STEP_REST,
        LOOP,
    ]


class Clock:
    """Exclusive wall and CPU (this thread's) seconds per stage: the time of a stage entered inside another
    is counted in the inner stage only."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._open: list[list[Any]] = []  # [label, wall0, cpu0, children's wall, children's cpu]

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def enter(self, label: str) -> None:
        self._open.append([label, *self.now(), 0.0, 0.0])

    def exit(self) -> None:
        label, w0, c0, child_w, child_c = self._open.pop()
        w, c = self.now()
        self.add(label, w - w0, c - c0, exclusive=(child_w, child_c))

    def add(self, label: str, wall: float, cpu: float, exclusive: tuple[float, float] = (0.0, 0.0)) -> None:
        """Count a span of ``wall``/``cpu`` seconds (less its children's ``exclusive``) to ``label``, and
        as a child of the stage open around it."""
        self.wall[label] += wall - exclusive[0]
        self.cpu[label] += cpu - exclusive[1]
        if self._open:
            self._open[-1][3] += wall
            self._open[-1][4] += cpu

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        self.enter(label)
        try:
            yield
        finally:
            self.exit()

    def wrap(self, label: str, fn: Callable) -> Callable:
        """``fn`` timed as ``label``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(label):
                return fn(*args, **kwargs)

        return timed


class BackwardSplit:
    """Marks set by gradient hooks while ``loss.backward()`` runs: the backward pass reaches the logits, the
    readout's input and each layer's input current and input in turn, and the span before each mark is
    that part's backward."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.marks: list[tuple[str, float, float]] = []

    def mark_on(self, tensor: torch.Tensor, label: str) -> None:
        """When the gradient of ``tensor`` is ready, the span since the previous mark is ``label``'s."""

        def hook(_grad: torch.Tensor) -> None:
            self.marks.append((label, *Clock.now()))

        if tensor.requires_grad:
            tensor.register_hook(hook)

    def run(self, backward: Callable, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """``backward(tensor, ...)`` timed as the "backward" stage, its marked spans as their parts."""
        self.marks.clear()
        self.clock.enter(BACKWARD)
        w0, c0 = Clock.now()
        try:
            return backward(tensor, *args, **kwargs)
        finally:
            w1, c1 = Clock.now()
            for label, w, c in [*self.marks, (bw_projection(1), w1, c1)]:
                self.clock.add(label, w - w0, c - c0)
                w0, c0 = w, c
            self.clock.exit()


def timed_batches(clock: Clock, make: Callable) -> Callable:
    """``train_batches`` whose iterator times every batch it produces as the data stage."""

    def batches(*args: Any, **kwargs: Any) -> Iterator:
        it = iter(make(*args, **kwargs))
        while True:
            with clock.stage(DATA):
                batch = next(it, None)
            if batch is None:
                return
            yield batch

    return batches


def instrument_layers(tr: Trainer, clock: Clock, split: BackwardSplit) -> list[tuple[Any, str]]:
    """Time each layer's input projection and time loop, the readout and the model's forward pass; hooks
    on the tensors whose gradients end each backward part. Returns the (object, attribute) pairs set."""
    layers = list(tr.model.get_submodule("stack.layers"))
    n = len(layers)

    for i, layer in enumerate(layers, start=1):

        def current(x: torch.Tensor, layer: Any = layer, i: int = i) -> tuple[torch.Tensor, Callable]:
            with clock.stage(projection(i)):
                cur, kernel = type(layer).sequence_current(layer, x)
            if i > 1:
                split.mark_on(x, bw_projection(i))
            split.mark_on(cur, bw_time_loop(i))
            return cur, clock.wrap(time_loop(i), kernel)

        layer.sequence_current = current
    readout = tr.model.readout

    def read(h: torch.Tensor) -> torch.Tensor:
        split.mark_on(h, BW_READOUT if n else BW_LOSS)
        with clock.stage(READOUT):
            logits = type(readout).forward(readout, h)
        split.mark_on(logits, BW_LOSS)
        return logits

    readout.forward = read
    dropout = tr.model.get_submodule("stack.dropout")

    def drop(x: torch.Tensor) -> torch.Tensor:
        with clock.stage(DROPOUT):
            out = type(dropout).forward(dropout, x)
        if out is not x:  # the gradient of a lower layer's spikes ends the backward of the dropout above
            split.mark_on(x, BW_DROPOUT)
        return out

    dropout.forward = drop
    tr.model.simulate = clock.wrap(STACK, tr.model.simulate)
    return [(layer, "sequence_current") for layer in layers] + [
        (readout, "forward"),
        (dropout, "forward"),
        (tr.model, "simulate"),
    ]


@contextmanager
def instrumented(tr: Trainer, clock: Clock) -> Iterator[None]:
    """The trainer's stages timed by ``clock`` inside the block; everything restored after it."""
    split = BackwardSplit(clock)
    backward = torch.Tensor.backward
    saved = [
        (trainer_module, "train_batches", timed_batches(clock, trainer_module.train_batches)),
        (trainer_module, "train_step", clock.wrap(STEP_REST, trainer_module.train_step)),
        (trainer_module, "add_step", clock.wrap(TOTALS, trainer_module.add_step)),
        (step, "losses", clock.wrap(LOSS, step.losses)),
        (step, "gradient_norms", clock.wrap(NORMS, step.gradient_norms)),
        (step, "finite_gradients", clock.wrap(NORMS, step.finite_gradients)),
        (step, "apply_update", clock.wrap(CLIP, step.apply_update)),
        (nonfinite, "bad_update", clock.wrap(UPDATE_CHECK, nonfinite.bad_update)),
        (tr, "_record_step", clock.wrap(RECORD, tr._record_step)),
        (tr, "save_checkpoint", clock.wrap(CHECKPOINT, tr.save_checkpoint)),
        (torch.Tensor, "backward", lambda t, *a, **k: split.run(backward, t, *a, **k)),
    ]
    # (object, name, original, whether the object held it itself: else it came from the class)
    originals = [(obj, name, getattr(obj, name), name in vars(obj)) for obj, name, _ in saved]
    hooks = [
        tr.optimizer.register_step_pre_hook(lambda *_: clock.enter(ADAMW)),
        tr.optimizer.register_step_post_hook(lambda *_: clock.exit()),
    ]
    set_on_instances: list[tuple[Any, str]] = []
    try:
        for obj, name, new in saved:
            setattr(obj, name, new)
        set_on_instances = instrument_layers(tr, clock, split)
        yield
    finally:
        for obj, name, old, own in originals:
            if own:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        for obj, name in set_on_instances:
            delattr(obj, name)
        for h in hooks:
            h.remove()


def shd_shaped_task(cfg: bench_train.Config, samples: int, seed: int = 1) -> data.Task:
    """An SHD-shaped task: ``samples`` Bernoulli rasters (``cfg.density`` per step and channel) kept in the
    loader's sparse form, as SHD files are; random labels."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(samples):
        t, c = np.nonzero(rng.random((cfg.steps, cfg.inputs)) < cfg.density)
        events.append((t, c, np.ones(len(t), np.float32)))
    labels = rng.integers(0, cfg.classes, samples)
    ds = data.SpikeDataset.from_events(events, labels, cfg.steps, cfg.inputs)
    names = [str(k) for k in range(cfg.classes)]
    return data.Task("shd-shaped", "classification", cfg.inputs, cfg.classes, names, ds, ds, ds, cfg.steps)


def make_trainer(cfg: bench_train.Config, batches: int, out: str, dropout: float) -> Trainer:
    """The library's Trainer for a bench_train configuration (torch's current thread count, no progress bar,
    ``dropout``)."""
    task = data.load_task("sl-mnist") if cfg.mnist else shd_shaped_task(cfg, batches * cfg.batch)
    tcfg = TrainConfig(
        task="sl-mnist" if cfg.mnist else "shd",
        net="alif" if cfg.adaptive else "lif",
        layers=(cfg.hidden, cfg.hidden),
        batch_size=cfg.batch,
        dropout=dropout,
        threads=torch.get_num_threads(),  # --threads, which main sets
        progress=False,
        out=out,
    )
    return Trainer(tcfg, task=task, log=lambda _: None)


PATHS = {"before": "torch's dropout, dense batches (the epoch before issue 27)", "now": "the current epoch"}


@contextmanager
def epoch_path(tr: Trainer, path: str) -> Iterator[None]:
    """Inside the block the trainer's epoch runs as ``path`` says: "now", or "before" issue 27's changes
    (torch's nn.Dropout, batches built densely)."""
    if path == "now":
        yield
        return
    stack, make = tr.model.get_submodule("stack"), trainer_module.train_batches
    dropout = stack.dropout
    stack.dropout = nn.Dropout(tr.cfg.dropout)
    trainer_module.train_batches = lambda *args, **kwargs: make(*args, **{**kwargs, "sparse": False})
    try:
        yield
    finally:
        trainer_module.train_batches, stack.dropout = make, dropout


def start(cfg: bench_train.Config, batches: int, out: str, dropout: float, stabilize: bool) -> Trainer:
    """A trainer ready for its first epoch, as ``spikestab train`` starts one (seed, then stabilisation)."""
    tr = make_trainer(cfg, batches, out, dropout)
    torch.manual_seed(tr.cfg.seed)
    if stabilize:
        tr.stabilize()
    tr.model.train()
    return tr


def profile_config(
    cfg: bench_train.Config, batches: int, epochs: int, stabilize: bool, dropout: float, before: bool = False
) -> dict:
    """Stabilise, warm up one step, then time ``epochs`` epochs stage by stage."""
    path = "before" if before else "now"
    with tempfile.TemporaryDirectory() as tmp:
        tr = start(cfg, batches, os.path.join(tmp, "run"), dropout, stabilize)
        metrics = tr.folder.open(resume=False)
        tr.train_step(next(iter(trainer_module.train_batches(tr.task, tr.cfg, 0))), 0.0)  # warm-up
        n_batches, runs = tr.batches_per_epoch(), []
        for _ in range(epochs):
            clock = Clock()
            with epoch_path(tr, path), instrumented(tr, clock), clock.stage(LOOP):
                tr._train_epoch(metrics, n_batches)
            runs.append({"wall": dict(clock.wall), "cpu": dict(clock.cpu)})
            rates = [r / max(tr.state.totals["steps"], 1) for r in tr.state.totals["rates"]]
            tr.state.next_epoch()
        n_layers = len(tr.cfg.layers)
    return {"config": cfg.name, "dropout": dropout, "path": path, **summarise(runs, n_layers, n_batches, rates)}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (float32 compared as its bits: -0.0 differs from 0.0)."""
    if a.dtype != b.dtype:
        return False
    return torch.equal(a.view(torch.int32), b.view(torch.int32)) if a.dtype == torch.float32 else torch.equal(a, b)


def side_by_side(cfg: bench_train.Config, batches: int, epochs: int, stabilize: bool, dropout: float) -> dict:
    """The same run before issue 27's changes and now, epochs alternating in this process (each with its
    own random state): the epochs' wall and CPU seconds, the ratios of their medians, and whether the two
    ended on bitwise the same weights."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for path in ("before", "now"):
            tr = start(cfg, batches, os.path.join(tmp, path), dropout, stabilize)
            runs[path] = {"trainer": tr, "metrics": tr.folder.open(resume=False), "rng": torch.get_rng_state()}
            runs[path].update(wall_s=[], cpu_s=[])
        for _ in range(epochs):
            for path, r in runs.items():
                tr = r["trainer"]
                torch.set_rng_state(r["rng"])
                with epoch_path(tr, path):
                    w0, c0 = time.perf_counter(), time.process_time()
                    tr._train_epoch(r["metrics"], tr.batches_per_epoch())
                    r["wall_s"].append(time.perf_counter() - w0)
                    r["cpu_s"].append(time.process_time() - c0)
                r["rng"] = torch.get_rng_state()
                tr.state.next_epoch()
        weights = [r["trainer"].model.state_dict() for r in runs.values()]
    out = {"config": cfg.name, "dropout": dropout, "epochs": epochs}
    out.update({path: {k: r[k] for k in ("wall_s", "cpu_s")} for path, r in runs.items()})
    for k in ("wall_s", "cpu_s"):
        out[f"speedup_{k[:-2]}"] = statistics.median(out["before"][k]) / statistics.median(out["now"][k])
    out["same_weights"] = all(same_bits(w, weights[1][n]) for n, w in weights[0].items())
    return out


def summarise(runs: list[dict], n_layers: int, n_batches: int, rates: list[float]) -> dict:
    """Per stage: the median over epochs of its seconds, its share of the epoch (wall, CPU) and ms per step."""
    stages = {}
    totals = {k: statistics.median(sum(r[k].values()) for r in runs) for k in ("wall", "cpu")}
    for label in stage_order(n_layers):
        wall = statistics.median(r["wall"].get(label, 0.0) for r in runs)
        cpu = statistics.median(r["cpu"].get(label, 0.0) for r in runs)
        stages[label] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "wall_share": wall / totals["wall"],
            "cpu_share": cpu / totals["cpu"],
            "ms_per_step": 1e3 * wall / n_batches,
        }
    return {
        "batches": n_batches,
        "epoch_wall_s": totals["wall"],
        "epoch_cpu_s": totals["cpu"],
        "rates": rates,
        "stages": stages,
    }


def group(label: str) -> str:
    """A stage's part of the epoch: data, forward, backward, optimizer, metrics, or Python overhead."""
    if label in (LOOP, STEP_REST, CHECKPOINT):
        return "Python overhead, bookkeeping"
    return label.split(":")[0]


def groups(stages: dict) -> dict[str, dict[str, float]]:
    """The stages' shares summed per part of the epoch."""
    out: dict[str, dict[str, float]] = {}
    for label, s in stages.items():
        g = out.setdefault(group(label), {"wall_share": 0.0, "cpu_share": 0.0})
        g["wall_share"] += s["wall_share"]
        g["cpu_share"] += s["cpu_share"]
    return out


def config_table(res: dict) -> list[str]:
    """One configuration's markdown table: each stage's share of the epoch, then each part's."""
    cfg = bench_train.CONFIGS[res["config"]]
    neuron = "ALIF" if cfg.adaptive else "LIF"
    rates = ", ".join(f"{r:.3f}" for r in res["rates"])
    lines = [
        f"### {cfg.name}, dropout {res['dropout']:g}, {PATHS[res['path']]}: {cfg.inputs} -> 2x{cfg.hidden} "
        f"recurrent {neuron}, T={cfg.steps}, B={cfg.batch}, {res['batches']} batches; layer spike rates {rates}",
        "",
        "| stage | share of epoch (wall) | share of epoch (CPU) |",
        "|---|---|---|",
    ]
    for label, s in res["stages"].items():
        if s["wall_s"] or s["cpu_s"]:
            lines.append(f"| {label} | {s['wall_share']:.1%} | {s['cpu_share']:.1%} |")
    for label, g in groups(res["stages"]).items():
        lines.append(f"| **{label}** (all) | **{g['wall_share']:.1%}** | **{g['cpu_share']:.1%}** |")
    return lines + [""]


def side_table(rows: list[dict]) -> list[str]:
    """The side-by-side epochs: before and now, their ratio, and whether the weights came out the same."""
    lines = [
        "| configuration | dropout | epoch CPU s before | now | speed-up (CPU) | speed-up (wall) | same weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        before, now = (statistics.median(r[p]["cpu_s"]) for p in ("before", "now"))
        lines.append(
            f"| {r['config']} | {r['dropout']:g} | {before:.2f} | {now:.2f} | {r['speedup_cpu']:.2f}x | "
            f"{r['speedup_wall']:.2f}x | {r['same_weights']} |"
        )
    return lines + [""]


def markdown(results: dict) -> str:
    meta = results["meta"]
    head = (
        f"One epoch of `spikestab train`'s Trainer per configuration (`benchmarks/profile_epoch.py`; "
        f"{meta['threads']} torch thread; median of {meta['epochs']} epochs after stabilisation"
        f"{'' if meta['stabilize'] else ' (skipped)'}; dropout {DEFAULT_DROPOUT:g} is `spikestab train`'s "
        f"default, 0 is bench_train's plain loop). Measured on a shared 2-core machine with background "
        f"experiments running (load average {meta['load_average_start'][0]:.1f} at the start, "
        f"{meta['load_average_end'][0]:.1f} at the end): absolute seconds are not a benchmark there, and even "
        f"the shares move with the load (memory-bound stages suffer most), so compare shares and ratios "
        f"measured in the same run. CPU is the CPU time of the process (side by side) or of its one thread "
        f"(stages), which the load disturbs less than the wall time. Command: `{meta['command']}`."
    )
    lines = [head, ""]
    if results["side_by_side"]:
        lines += [
            "## Side by side: the same run before issue 27's changes and now",
            "",
            "Epochs alternating in one process, each run with its own random state; before = "
            f"{PATHS['before']}. Same weights: bitwise equal after the last epoch.",
            "",
            *side_table(results["side_by_side"]),
        ]
    lines += ["## Where the epoch goes, stage by stage", ""]
    for res in results["runs"]:
        lines += config_table(res)
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=",".join(bench_train.CONFIGS))
    ap.add_argument("--batches", type=int, default=8, help="batches per epoch of the SHD-shaped configurations")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration (the median is reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--dropouts",
        default=f"{DEFAULT_DROPOUT:g},0",
        help="comma list of dropout rates to profile each configuration with (default: spikestab train's and 0, "
        "as in bench_train)",
    )
    ap.add_argument("--no-before", action="store_true", help="profile the current epoch only (no 'before' path)")
    ap.add_argument("--no-stabilize", action="store_true", help="train from the initial weights, unstabilised")
    ap.add_argument("--out", default="benchmarks/results", help="folder of profile_epoch.json and .md")
    args = ap.parse_args(argv)
    for flag in ("batches", "epochs", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be an integer >= 1, got {getattr(args, flag)}")
    args.configs = bench_train.layers.comma_list(args.configs, bench_train.CONFIGS, "--configs")
    try:
        args.dropouts = [float(d) for d in args.dropouts.split(",")]
    except ValueError:
        raise ValueError(f"--dropouts must be a comma list of rates in [0, 1), got {args.dropouts!r}") from None
    if not all(0.0 <= d < 1.0 for d in args.dropouts):
        raise ValueError(f"--dropouts must be a comma list of rates in [0, 1), got {args.dropouts}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    command = "benchmarks/profile_epoch.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"threads": args.threads, "epochs": args.epochs, "stabilize": not args.no_stabilize, "command": command}
    meta.update(torch=torch.__version__, python=platform.python_version(), load_average_start=os.getloadavg())
    results: dict = {"meta": meta, "side_by_side": [], "runs": []}
    common = (args.batches, args.epochs, not args.no_stabilize)
    for name in args.configs:
        cfg = bench_train.CONFIGS[name]
        for dropout in args.dropouts:
            for before in (False,) if args.no_before else (True, False):
                res = profile_config(cfg, *common, dropout, before)
                results["runs"].append(res)
                print("\n".join(config_table(res)), flush=True)
            if not args.no_before:
                results["side_by_side"].append(side_by_side(cfg, *common, dropout))
                print("\n".join(side_table(results["side_by_side"][-1:])), flush=True)
    meta["load_average_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(results, os.path.join(args.out, "profile_epoch.json"))
    atomic_write_text(markdown(results), os.path.join(args.out, "profile_epoch.md"))
    return results


if __name__ == "__main__":
    main()
