"""One layer's speed in two versions of spikestab, side by side: did a change keep the kernels' speed?

Each git revision is checked out as a worktree under a temporary folder; rounds alternate between the two
(one subprocess per round and version, one torch thread), each timing forward+backward of the bench_layers
workload a-lif (recurrent LIF 700 -> 256, T = 250, B = 32, input spikes at 5 % density, subtract reset, the
fast sigmoid at sharpness 0.5, the default backend). On a shared machine only the ratio of the two versions
in the same run means anything: the table gives each round's medians and the ratio of the medians.

    python benchmarks/bench_trees.py b199475 HEAD --rounds 5 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, time, torch
from spikestab.neurons import LIF
from spikestab.surrogate import SurrogateGradient
torch.set_num_threads(1)
torch.manual_seed(0)
T, B, N_IN, N = {steps}, {batch}, 700, 256
layer = LIF(N_IN, N, recurrent=True, tau=20.0, threshold=0.5, reset="subtract",
            spike_fn=SurrogateGradient("fast-sigmoid", sharpness=0.5))
x = (torch.rand(T, B, N_IN) < 0.05).float()
def once():
    out = layer(x)
    spikes = out[0] if isinstance(out, tuple) else out
    spikes.sum().backward()
once()
times = []
for _ in range({repeats}):
    t0 = time.perf_counter(); once(); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def worktree(rev: str, folder: Path) -> Path:
    """A detached checkout of ``rev`` in ``folder``."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True)
    command = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), sha.stdout.strip()]
    subprocess.run(command, capture_output=True, check=True)
    return folder


def time_tree(tree: Path, steps: int, batch: int, repeats: int) -> list[float]:
    """Seconds of each forward+backward, measured in a fresh process importing ``tree``'s package."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    code = PROBE.format(steps=steps, batch=batch, repeats=repeats)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def alternate(trees: dict[str, Path], i: int, args: argparse.Namespace) -> dict[str, float]:
    """Round ``i``: the median seconds of each version, the order swapped every other round."""
    order = list(trees) if i % 2 == 0 else list(reversed(trees))
    medians = {side: statistics.median(time_tree(trees[side], args.steps, args.batch, args.repeats)) for side in order}
    print(f"round {i + 1}: " + ", ".join(f"{side} {s * 1e3:.0f} ms" for side, s in medians.items()), flush=True)
    return medians


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per round and version")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default=None, help="folder for bench_trees.json")
    args = ap.parse_args(argv)
    for name in ("rounds", "repeats", "steps", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    revs = {"before": args.before, "after": args.after}  # the same revision twice measures the noise
    with tempfile.TemporaryDirectory() as tmp:
        trees = {side: worktree(rev, Path(tmp) / side) for side, rev in revs.items()}
        try:
            rounds = [alternate(trees, i, args) for i in range(args.rounds)]
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    before = statistics.median(r["before"] for r in rounds)
    after = statistics.median(r["after"] for r in rounds)
    print(
        f"\n| version | median forward+backward (ms) |\n|---|---|\n| before: {args.before} | {before * 1e3:.0f} |\n"
        f"| after: {args.after} | {after * 1e3:.0f} |\n\nafter / before: {after / before:.3f}"
    )
    if args.out:
        out = Path(args.out) / "bench_trees.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "workload": "a-lif",
            "steps": args.steps,
            "batch": args.batch,
            "rounds": rounds,
            "before": args.before,
            "after": args.after,
            "ratio_after_before": after / before,
        }
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
