"""SpikeDataset densification, the seeded loader (order, dropout, epochs) and task-level bad input."""

import numpy as np
import pytest
import torch

from spikestab.data import SpikeDataset, load_task, make_loader, task_options


def _dataset(n=10, steps=6, channels=5, seed=0, labels=None, **kwargs):
    rng = np.random.default_rng(seed)
    lat = np.where(rng.random((n, channels)) < 0.7, rng.integers(0, steps, (n, channels)), -1)
    labels = np.arange(n) % 3 if labels is None else labels
    return SpikeDataset.from_latencies(lat, labels, steps, **kwargs), lat


def _dense_reference(lat, steps):
    """Plain loop: x[t, i, c] = 1 where sample i's channel c fires at step t."""
    x = np.zeros((steps, len(lat), lat.shape[1]), np.float32)
    for i, row in enumerate(lat):
        for c, t in enumerate(row):
            if t >= 0:
                x[t, i, c] = 1
    return x


def test_densify_matches_a_plain_loop_and_time_repeat_is_np_repeat():
    ds, lat = _dataset()
    np.testing.assert_array_equal(ds.densify(range(10)).numpy(), _dense_reference(lat, 6))
    np.testing.assert_array_equal(ds.densify([7, 2]).numpy(), _dense_reference(lat[[7, 2]], 6))
    x, y = ds[4]
    np.testing.assert_array_equal(x.numpy(), _dense_reference(lat[4:5], 6)[:, 0])
    assert y == 1  # label 4 % 3
    rep, _ = _dataset(time_repeat=3)
    assert rep.n_steps == 18
    np.testing.assert_array_equal(rep.densify(range(10)).numpy(), np.repeat(_dense_reference(lat, 6), 3, 0))
    sub = ds.subset([9, 0, 9])
    np.testing.assert_array_equal(sub.densify(range(3)).numpy(), _dense_reference(lat[[9, 0, 9]], 6))
    np.testing.assert_array_equal(sub.labels, [0, 0, 0])


def test_loader_batches_cover_the_epoch_and_replay_by_seed_and_epoch():
    ds, lat = _dataset(n=11, labels=np.arange(11))  # label = sample index
    loader = make_loader(ds, 4, shuffle=True, seed=5)
    assert len(loader) == 3 and len(make_loader(ds, 4, True, drop_last=True)) == 2
    epoch0 = list(loader)
    epoch1 = list(loader)  # the next iteration is the next epoch: another order
    assert [x.shape for x, _ in epoch0] == [(6, 4, 5), (6, 4, 5), (6, 3, 5)]
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in epoch0)
    order = torch.cat([y for _, y in epoch0]).numpy()
    assert sorted(order) == list(range(11)) and list(order) != list(range(11))  # a permutation, shuffled
    np.testing.assert_array_equal(torch.cat([x for x, _ in epoch0], 1).numpy(), _dense_reference(lat[order], 6))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))
    replay = make_loader(ds, 4, shuffle=True, seed=5)
    replay.set_epoch(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch1, replay))
    ordered = next(iter(make_loader(ds, 11, shuffle=False)))
    np.testing.assert_array_equal(ordered[0].numpy(), _dense_reference(lat, 6))


def test_input_dropout_deletes_spikes_on_the_train_split_only():
    lat = np.zeros((200, 50), np.int64)  # every channel fires at step 0: 10,000 spikes
    ds = SpikeDataset.from_latencies(lat, np.zeros(200), 1, input_dropout=0.3)
    x = torch.cat([x for x, _ in make_loader(ds, 64, shuffle=False, seed=1)], dim=1)
    kept = x.sum().item() / 10000
    assert abs(kept - 0.7) < 0.03 and set(x.unique().tolist()) <= {0.0, 1.0}  # no rescaling
    a = next(iter(make_loader(ds, 64, False, seed=1)))[0]
    assert torch.equal(a, x[:, :64])  # deterministic for a seed
    task = load_task("randman", input_dropout=0.5, samples_per_class=20)
    assert task.train.input_dropout == 0.5 and task.val.input_dropout == 0 and task.test.input_dropout == 0


def test_bad_input_is_rejected_with_the_argument_named():
    ds, _ = _dataset()
    with pytest.raises(ValueError, match="unknown task 'mnist'; known tasks: sl-mnist, shd, ssc, ptb, randman"):
        load_task("mnist")
    with pytest.raises(ValueError, match="time_repeat"):
        load_task("randman", time_repeat=0)
    with pytest.raises(ValueError, match="input_dropout"):
        load_task("randman", input_dropout=1.0)
    with pytest.raises(ValueError, match="unknown option"):
        load_task("randman", units=3)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0, True)
    with pytest.raises(ValueError, match="SpikeDataset"):
        make_loader([1, 2], 1, True)
    with pytest.raises(ValueError, match="events must lie"):
        SpikeDataset.from_latencies(np.array([[7]]), np.array([0]), 5)
    assert set(task_options("randman")) >= {"n_classes", "n_units", "dim", "alpha", "n_steps"}
