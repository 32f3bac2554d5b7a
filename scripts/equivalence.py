"""Same seeds, same numbers: fingerprints of tiny training runs of one source tree, to compare two commits.

For the spikestab source tree TREE (a commit checked out as a worktree, imported from TREE/src), runs five
tiny jobs on one thread with fixed seeds, each in a fresh temporary folder: sl-MNIST (scikit-learn's 8x8
digits), Randman, PTB (a few thousand tokens), a 2-point sweep (one worker, in this process) and a run
interrupted after a checkpoint and resumed. For each it records the SHA-256 of the final weights (the
state_dict tensors in name order: name, dtype, shape, bytes) and of the metric values (every number of
results.json and metrics.jsonl but the wall-clock fields), the per-tensor hashes, the values themselves, the
texts of those files (the stability report's table, names, notes: hashed on their own, as they may change
wording without any number changing) and the configuration (old names read as today's, so a changed
default shows).

    git worktree add --detach /tmp/eq-base b199475
    python scripts/equivalence.py --tree /tmp/eq-base --out docs/results/equivalence/b199475.json
    python scripts/equivalence.py --compare docs/results/equivalence/b199475.json docs/results/equivalence/HEAD.json

The jobs use the Python API (TrainConfig.from_dict, Trainer, run_sweep), whose field names are read from
the tree's TrainConfig: before issue 23 the surrogate shape was ``sg`` and the conditions ``stabilize``.
Only the tree's own defaults fill everything the jobs do not set, so a changed default shows as a
difference. A few minutes of one CPU core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# wall-clock and bookkeeping fields: they differ between any two runs, so they are not fingerprinted
CLOCK_WORDS = ("second", "time", "timing", "eta", "elapsed", "per_s", "started", "host", "pid", "worker")
RANDMAN = {"n_classes": 3, "n_units": 20, "n_steps": 30, "samples_per_class": 60}
OLD_KEYS = {"sg": "surrogate", "stabilize": "conditions"}  # a stored config read under today's names
PATHS = ("out", "data_dir")  # where the run was written: a temporary folder


def _import_tree(tree: Path):
    """Import spikestab from ``tree``/src (refusing any other copy) on one thread."""
    os.environ["OMP_NUM_THREADS"] = "1"  # the C loops' OpenMP threads (read when the library loads)
    sys.path.insert(0, str(tree / "src"))
    import torch

    import spikestab

    if Path(spikestab.__file__).resolve().parents[1] != (tree / "src").resolve():
        raise SystemExit(f"imported spikestab from {spikestab.__file__}, not from {tree}/src")
    torch.set_num_threads(1)
    return spikestab


def _names() -> dict[str, str]:
    """The tree's TrainConfig names of the renamed fields (current name -> the tree's)."""
    from spikestab.train.config import TrainConfig

    have = TrainConfig.__dataclass_fields__
    return {
        "surrogate": "surrogate" if "surrogate" in have else "sg",
        "conditions": "conditions" if "conditions" in have else "stabilize",
    }


def _config(**fields: Any):
    from spikestab.train.config import TrainConfig

    names = _names()
    return TrainConfig.from_dict({names.get(k, k): v for k, v in fields.items()})


def tensor_hashes(state: dict) -> dict[str, str]:
    """name -> SHA-256 of (dtype, shape, bytes) of each state_dict tensor."""
    out = {}
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
        out[name] = h.hexdigest()
    return out


def _is_clock(key: str) -> bool:
    return any(word in key.lower() for word in CLOCK_WORDS)


def leaves(obj: Any, where: str = "") -> dict[str, Any]:
    """path -> value of every leaf of a JSON value, wall-clock fields and the stored config left out (the
    config is compared on its own, ``stored_config``)."""
    if isinstance(obj, dict):
        items = [(f"{where}/{k}", v) for k, v in obj.items() if not _is_clock(k) and k != "config"]
    elif isinstance(obj, list):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    else:
        return {where: obj}
    return {path: value for key, v in items for path, value in leaves(v, key).items()}


def split_values(obj: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The leaves of ``obj`` as (metric values: numbers, booleans and nulls; texts: the strings)."""
    flat = leaves(obj)
    return (
        {k: v for k, v in flat.items() if not isinstance(v, str)},
        {k: v for k, v in flat.items() if isinstance(v, str)},
    )


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def stored_config(results: dict) -> dict:
    """results.json's config under today's names (old keys renamed, backend "event" -> "native"), without
    the paths: compared on its own, so that a changed default shows."""
    cfg = {OLD_KEYS.get(k, k): v for k, v in results["config"].items() if k not in PATHS}
    if cfg.get("backend") == "event":
        cfg["backend"] = "native"
    return cfg


def fingerprint(state: dict, run_dir: Path) -> dict:
    """The fingerprints of a finished run: its weights, its metric values (every number of results.json
    and metrics.jsonl), its texts (the strings there: names, notes, the stability report's table), and
    its configuration."""
    stored = json.loads((run_dir / "results.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    values, texts = split_values({"results": stored, "metrics": [json.loads(x) for x in lines if x.strip()]})
    tensors = tensor_hashes(state)
    return {
        "weights_sha256": _sha(tensors),
        "metrics_sha256": _sha(values),
        "texts_sha256": _sha(texts),
        "config": stored_config(stored),
        "tensors": tensors,
        "metrics": values,
        "texts": texts,
    }


def train(tmp: Path, name: str, **fields: Any) -> dict:
    from spikestab.train import Trainer

    cfg = _config(out=str(tmp / name), threads=1, progress=False, epochs=1, **fields)
    trainer = Trainer(cfg, log=lambda s: None)
    trainer.fit()
    return fingerprint(trainer.model.state_dict(), Path(cfg.out))


class Interrupt(Exception):
    """Raised by the step hook that stops the run to be resumed."""


def resumed(tmp: Path) -> dict:
    """Randman, 2 epochs, checkpoints every 2 steps, stopped after step 5 (mid-epoch), then resumed."""
    from spikestab.train import Trainer

    cfg = _config(
        task="randman",
        task_options=RANDMAN,
        layers=[32],
        batch_size=16,
        epochs=2,
        checkpoint_every=2,
        out=str(tmp / "resumed"),
        threads=1,
        progress=False,
    )

    def stop(trainer, step: int) -> None:
        if step == 5:
            raise Interrupt

    try:
        Trainer(cfg, on_step=stop, log=lambda s: None).fit()
        raise RuntimeError("the run was not interrupted")
    except Interrupt:
        pass
    trainer = Trainer(cfg, log=lambda s: None)
    trainer.fit(resume=True)
    return fingerprint(trainer.model.state_dict(), Path(cfg.out))


def sweep(tmp: Path) -> dict:
    """A 2-point Randman grid over the dampening, one worker, and its report's settings."""
    from spikestab.sweep import report, run_sweep
    from spikestab.train.checkpoint import load_checkpoint

    names = _names()
    fixed = {
        "task": "randman",
        "task_options": RANDMAN,
        "layers": [32],
        "epochs": 1,
        "batch_size": 16,
        names["conditions"]: "none",
        "threads": 1,
    }
    out = tmp / "sweep"
    run_sweep(out, fixed, {"dampening": [0.5, 1.0]}, workers=1, log=lambda s: None)
    data = report(out)
    trials = {}
    for run_dir in sorted((out / "trials").iterdir()):
        state = load_checkpoint(run_dir / "checkpoint.pt")["model"]
        trials[run_dir.name] = fingerprint(state, run_dir)
    settings = [{"params": s["params"], "values": [t["value"] for t in s["trials"]]} for s in data["settings"]]
    return {
        "weights_sha256": _sha([t["weights_sha256"] for t in trials.values()]),
        "metrics_sha256": _sha({"settings": settings, "trials": [t["metrics_sha256"] for t in trials.values()]}),
        "texts_sha256": _sha([t["texts_sha256"] for t in trials.values()]),
        "settings": settings,
        "trials": trials,
    }


JOBS = {
    "sl-mnist": lambda tmp: train(
        tmp, "sl-mnist", task="sl-mnist", task_options={"source": "digits"}, layers=[32], batch_size=128
    ),
    "randman": lambda tmp: train(tmp, "randman", task="randman", task_options=RANDMAN, layers=[32], batch_size=16),
    "ptb": lambda tmp: train(
        tmp,
        "ptb",
        task="ptb",
        task_options={"vocab_size": 200, "train_tokens": 4000, "eval_tokens": 1000},
        layers=[32],
        batch_size=16,
        seq_len=25,
    ),
    "sweep": sweep,
    "resumed": resumed,
}


def run_tree(tree: Path, out: Path, jobs: list[str]) -> None:
    spikestab = _import_tree(tree)
    import torch

    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    record: dict[str, Any] = {
        "commit": commit.strip(),
        "spikestab": spikestab.__file__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "config_names": _names(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in jobs:
            print(f"equivalence: {name} ...", file=sys.stderr, flush=True)
            record["runs"][name] = JOBS[name](Path(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two JSON values differ (the first few)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def _short(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def compare(a_path: Path, b_path: Path) -> int:
    """Print, per job, whether the weights, the metric values, the texts and the configuration match, and
    where they differ; exit status 1 if the weights or the metric values differ."""
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    same = True
    for name in a["runs"]:
        ra, rb = a["runs"][name], b["runs"].get(name, {})
        equal = {k: ra.get(f"{k}_sha256") == rb.get(f"{k}_sha256") for k in ("weights", "metrics", "texts")}
        equal["config"] = ra.get("config") == rb.get("config")
        same &= equal["weights"] and equal["metrics"]
        print(f"{name}: " + ", ".join(f"{k} {'equal' if v else 'DIFFER'}" for k, v in equal.items()))
        if not all(equal.values()):
            skip = {f"{k}_sha256" for k in equal}
            diffs = _differences(
                {k: v for k, v in ra.items() if k not in skip}, {k: v for k, v in rb.items() if k not in skip}
            )
            for line in diffs[:12]:
                print(f"  {_short(line)}")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", type=Path, help="spikestab source tree (a git worktree) to run")
    p.add_argument("--out", type=Path, help="JSON file for the fingerprints")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprint files")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.tree is None or args.out is None:
        p.error("give --tree and --out (or --compare A B)")
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        p.error(f"--jobs: unknown {unknown}; accepted: {','.join(JOBS)}")
    if not (args.tree / "src" / "spikestab").is_dir():
        p.error(f"--tree {args.tree} holds no src/spikestab")
    run_tree(args.tree, args.out, jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
