"""Randman: seeded determinism, one spike per unit, per-class scaling, difficulty options, splits."""

from collections import Counter

import numpy as np
import pytest

from spikestab.data import load_task
from spikestab.data.randman import spiking_randman


def test_same_seed_same_data_other_seed_other_data():
    a = spiking_randman(n_classes=3, n_units=8, samples_per_class=50, seed=1)
    b = spiking_randman(n_classes=3, n_units=8, samples_per_class=50, seed=1)
    c = spiking_randman(n_classes=3, n_units=8, samples_per_class=50, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_one_spike_per_unit_and_per_class_min_max_scaling():
    lat, y = spiking_randman(n_classes=4, n_units=6, n_steps=40, dim=2, samples_per_class=100, seed=0)
    assert lat.shape == (400, 6) and np.bincount(y).tolist() == [100] * 4
    assert lat.min() >= 0 and lat.max() <= 39
    for c in range(4):  # each class is scaled to [0, 1] per unit: the extremes land on the first/last step
        assert (lat[y == c].min(0) == 0).all() and (lat[y == c].max(0) == 39).all()
    task = load_task("randman", n_classes=4, n_units=6, n_steps=40, dim=2, samples_per_class=100)
    for split in (task.train, task.val, task.test):
        x = split.densify(range(len(split)))
        assert x.shape[0] == 40 and (x.sum(0) == 1).all()  # exactly one spike per unit and sample


def test_difficulty_options_and_disjoint_splits():
    lat, _ = spiking_randman(n_classes=2, n_units=5, n_steps=100, step_frac=0.5, samples_per_class=30)
    assert lat.max() <= 50
    task = load_task("randman", n_classes=5, n_units=7, samples_per_class=40, seed=4)
    assert (task.input_size, task.output_size, task.n_steps) == (7, 5, 100)
    assert (len(task.train), len(task.val), len(task.test)) == (160, 20, 20)
    lat, y = spiking_randman(n_classes=5, n_units=7, samples_per_class=40, seed=4)
    rows = [tuple(r) for r in lat]
    split_rows = []
    for split in (task.train, task.val, task.test):
        x = split.densify(range(len(split)))
        split_rows += [tuple(r) for r in x.argmax(0).numpy()]
    assert Counter(split_rows) == Counter(rows)  # each generated sample in exactly one split


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        spiking_randman(n_classes=1)
    with pytest.raises(ValueError, match="alpha"):
        spiking_randman(alpha=0)
    with pytest.raises(ValueError, match="step_frac"):
        spiking_randman(step_frac=1.5)
    with pytest.raises(ValueError, match="data_dir must be None"):
        load_task("randman", "/tmp")
