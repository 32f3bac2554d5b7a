"""benchmarks/bench_train.py's sparse-batch entry: the same spikes as the dense batches every other entry
gets, the same training step, and speed-ups that subtract each entry's own batch time."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_train  # noqa: E402

TINY_MNIST = bench_train.Config("sl-mnist", 784, 8, 100, 16, 10, mnist=True)


def test_sparse_batches_hold_the_dense_batches_spikes():
    dense = list(bench_train.epoch_batches(TINY_MNIST, 0))[:3]
    sparse = list(bench_train.epoch_batches(TINY_MNIST, 0, sparse=True))[:3]
    for (x, y), (xs, ys) in zip(dense, sparse):
        assert xs.is_sparse and not x.is_sparse
        assert x.shape == (100, 16, 784) and 0 < x.count_nonzero() < 0.01 * x.numel()
        assert torch.equal(xs.to_dense(), x) and torch.equal(ys, y)


def test_sparse_batch_entry_trains_like_the_dense_one():
    torch.set_num_threads(1)
    nets = {name: bench_train.Network(name, TINY_MNIST) for name in (bench_train.SPIKESTAB, bench_train.SPARSE_BATCHES)}
    batches = {name: list(bench_train.epoch_batches(TINY_MNIST, 0, net.sparse))[:2] for name, net in nets.items()}
    losses = {name: [net.train_step(x, y) for x, y in batches[name]] for name, net in nets.items()}
    dense, sparse = nets.values()
    assert losses[bench_train.SPIKESTAB] == pytest.approx(losses[bench_train.SPARSE_BATCHES], rel=1e-5)
    for a, b in zip(dense.layers, sparse.layers):
        for key in a.params:
            torch.testing.assert_close(a.params[key], b.params[key])


def test_sparse_batch_entry_only_on_sl_mnist():
    assert bench_train._skip_reason(bench_train.SPARSE_BATCHES, TINY_MNIST) is None
    assert "dense" in bench_train._skip_reason(bench_train.SPARSE_BATCHES, bench_train.CONFIGS["shd-lif"])


def test_speedups_subtract_each_entrys_own_batches():
    def row(*cpu: float) -> dict:
        return {"epochs": [{"wall_s": c, "cpu_s": c} for c in cpu]}

    rows = {
        bench_train.SPIKESTAB: row(3.0, 3.2, 2.8),
        bench_train.SPARSE_BATCHES: row(2.0, 2.0),
        "Norse": row(10.0, 12.0, 11.0),
        "Norse compiled": row(7.0, 7.0),
    }
    data = [{"cpu_s": 1.0, "wall_s": 1.0}]
    sparse = [{"cpu_s": 0.2, "wall_s": 0.2}, {"cpu_s": 0.4, "wall_s": 0.4}]
    s = bench_train._summarise(rows, data, sparse)
    assert s["fastest_peer"] == "Norse compiled" and s["fastest_eager_peer"] == "Norse"
    assert s["speedup_vs_fastest_eager"] == pytest.approx(11.0 / 3.0)
    assert s["net_cpu_speedup_vs_fastest_eager"] == pytest.approx((11.0 - 1.0) / (3.0 - 1.0))
    # 10x Norse is 1.1 s CPU; beside its 1.0 s of batches, spikestab's 2.0 s would have to fit in 0.1 s
    assert s["goal_cpu_s"] == pytest.approx(1.1) and s["goal_net_factor"] == pytest.approx(2.0 / 0.1)
    sb = s["sparse_batches"]
    assert sb["data_cpu_s"] == pytest.approx(0.3)
    assert sb["speedup_vs_norse_compiled"] == pytest.approx(7.0 / 2.0)
    # the peers' epochs less their (dense) batches, against this entry's epoch less its own batches
    assert sb["net_cpu_speedup_vs_norse_compiled"] == pytest.approx((7.0 - 1.0) / (2.0 - 0.3))
    assert sb["goal_net_factor"] == pytest.approx((2.0 - 0.3) / (1.1 - 0.3))
    # batches that alone take longer than the goal: no factor can reach it
    slow = bench_train._summarise(rows, [{"cpu_s": 2.5, "wall_s": 2.5}], sparse)
    assert slow["goal_net_factor"] is None
    assert "batches alone take longer" in bench_train._speedup_note(bench_train.SPIKESTAB, slow, "every epoch")


def test_readme_row_from_results(tmp_path):
    def row(*cpu: float) -> dict:
        return {"epochs": [{"wall_s": c, "cpu_s": c} for c in cpu]}

    mnist = {bench_train.SPIKESTAB: row(2.0), bench_train.SPARSE_BATCHES: row(1.7), "Norse": row(9.0)}
    shd = {bench_train.SPIKESTAB: row(1.0), "Norse": row(5.0), "Norse compiled": row(2.5)}
    results = {
        "meta": {"threads": 1, "repeats": 1, "load_average_start": [0.5], "load_average_end": [0.7], "command": "X"},
        "configs": {
            "sl-mnist": {"summary": bench_train._summarise(mnist, [{"cpu_s": 0.4}], [{"cpu_s": 0.1}])},
            "shd-lif": {"summary": bench_train._summarise(shd, [{"cpu_s": 0.2}], [])},
        },
    }
    text = bench_train.readme_row(results)
    assert text.startswith(bench_train.README_ROW) and text.count(" | ") == 2
    assert "sl-mnist **4.5x** the fastest eager peer (Norse); fed the sparse batches" in text and "**5.3x**" in text
    assert "shd-lif **5.0x** the fastest eager peer (Norse), 2.50x compiled Norse" in text
    # the goal's factor is the sparse-batch entry's where it ran: (1.7 - 0.1) / (0.9 - 0.1)
    assert "sl-mnist 2.0x, shd-lif 2.7x faster" in text and "not met" in text
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n| what | result | command |\n|---|---|---|\n| One training epoch, old | old | old |\n")
    assert not bench_train.write_readme_row(str(readme), results)
    assert bench_train.write_readme_row(str(readme), results, check=True)
    assert readme.read_text().splitlines()[4] == text


def test_readme_row_is_the_committed_benchmark():
    """README's epoch-benchmark row is what bench_train.py writes from the committed bench_train.json (a hand
    edit, or results committed without `bench_train.py --readme README.md`, fail here)."""
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "benchmarks", "results", "bench_train.json")) as f:
        results = json.load(f)
    assert bench_train.write_readme_row(os.path.join(root, "README.md"), results, check=True)
