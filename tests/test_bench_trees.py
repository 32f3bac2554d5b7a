"""benchmarks/bench_trees.py runs end to end at a tiny size and writes its JSON, so the speed comparison
between versions cannot rot (the same revision twice: a clone without history has only HEAD)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "benchmarks" / "bench_trees.py")


def test_bench_trees_compares_two_revisions(tmp_path):
    sizes = ["--rounds", "2", "--repeats", "1", "--steps", "5", "--batch", "2", "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, SCRIPT, "HEAD", "HEAD", *sizes], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "bench_trees.json").read_text())
    assert len(result["rounds"]) == 2 and all(set(r) == {"before", "after"} for r in result["rounds"])
    assert result["ratio_after_before"] > 0 and "after / before" in run.stdout


def test_bench_trees_refuses_bad_sizes():
    run = subprocess.run(
        [sys.executable, SCRIPT, "HEAD", "HEAD", "--rounds", "0"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "--rounds must be at least 1" in run.stderr
