"""SHD h5 files: round trip, binning against a hand count, label order from the file, bad files."""

import h5py
import numpy as np
import pytest
import torch

from spikestab.data.shd import bin_events, bin_spikes, read_shd, write_shd

KEYS = ["neun", "zero", "eins", "one"]  # deliberately not the default SHD order


def _samples(n=6, seed=0):
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(5, 40))
        times.append(np.sort(rng.uniform(0, 1.2, k)))
        units.append(rng.integers(0, 700, k))
    return times, units, np.arange(n) % len(KEYS), rng.integers(0, 3, n)


def test_round_trip_keeps_every_field(tmp_path):
    times, units, labels, speakers = _samples()
    meta = dict(gender=["male", "female", "female"], age=[30, 41, 25], body_height=[180.0, 165.5, 170.0])
    write_shd(tmp_path / "x.h5", times, units, labels, speakers, KEYS, meta)
    r = read_shd(tmp_path / "x.h5")
    assert r["keys"] == KEYS
    np.testing.assert_array_equal(r["labels"], labels)
    np.testing.assert_array_equal(r["speakers"], speakers)
    for t0, t1, u0, u1 in zip(times, r["times"], units, r["units"]):
        np.testing.assert_array_equal(t1, t0.astype(np.float16).astype(np.float64))  # float16 on disk
        np.testing.assert_array_equal(u1, u0)
    assert list(r["meta"]["gender"]) == [b"male", b"female", b"female"]
    np.testing.assert_array_equal(r["meta"]["age"], [30, 41, 25])
    np.testing.assert_allclose(r["meta"]["body_height"], [180.0, 165.5, 170.0])


def test_written_file_has_umask_permissions_and_no_leftovers(tmp_path):
    """Regression: the atomic write used mkstemp, leaving the dataset readable by its owner only."""
    import os

    times, units, labels, speakers = _samples()
    write_shd(tmp_path / "x.h5", times, units, labels, speakers, KEYS)
    (tmp_path / "plain").write_text("")
    assert (tmp_path / "x.h5").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert sorted(os.listdir(tmp_path)) == ["plain", "x.h5"]


def test_file_has_the_exact_shd_layout(tmp_path):
    times, units, labels, speakers = _samples(3)
    write_shd(tmp_path / "x.h5", times, units, labels, speakers, KEYS)
    with h5py.File(tmp_path / "x.h5") as f:
        assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float16
        assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
        assert f["labels"].dtype == np.uint16 and f["extra/speaker"].dtype == np.uint16
        assert [k.decode() for k in f["extra/keys"][()]] == KEYS
        assert set(f["extra/meta_info"]) == {"gender", "age", "body_height"}
    assert not [p for p in tmp_path.iterdir() if p.name != "x.h5"]  # no temporary file left behind


def test_binning_matches_a_hand_count():
    # dt = 4 ms, 5 bins: mid-bin times so the hand count is unambiguous
    t = np.array([0.001, 0.002, 0.003, 0.009, 0.0199, 0.021, 0.5])
    u = np.array([7, 7, 2, 7, 0, 699, 3])
    # bins: 0,0,0 | 2 | 4 | 5 (dropped, >= 5*4ms) | 125 (dropped)
    step, chan, cnt = bin_events(t, u, dt=0.004, n_steps=5)
    assert sorted(zip(step.tolist(), chan.tolist(), cnt.tolist())) == [(0, 2, 1), (0, 7, 2), (2, 7, 1), (4, 0, 1)]
    dense = bin_spikes(t, u, dt=0.004, n_steps=5)
    assert dense.shape == (5, 700) and dense.sum() == 4 and dense[0, 7] == 1
    assert bin_spikes(t, u, dt=0.004, n_steps=5, counts=True)[0, 7] == 2


def test_label_order_comes_from_the_file(tmp_path):
    times, units, labels, speakers = _samples(4)
    write_shd(tmp_path / "x.h5", times, units, labels, speakers, KEYS)
    r = read_shd(tmp_path / "x.h5")
    assert [r["keys"][y] for y in r["labels"]] == ["neun", "zero", "eins", "one"]


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        read_shd(tmp_path / "nowhere.h5")
    times, units, labels, speakers = _samples(4)
    good = write_shd(tmp_path / "good.h5", times, units, labels, speakers, KEYS)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_shd(cut)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["labels"] = np.zeros(3, np.uint16)
    with pytest.raises(ValueError, match="not an SHD file"):
        read_shd(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="labels must lie"):
        write_shd(tmp_path / "y.h5", times, units, labels + 10, speakers, KEYS)
    with pytest.raises(ValueError, match="n_steps"):
        bin_events(times[0], units[0], n_steps=0)
    with pytest.raises(ValueError, match="units must lie"):
        bin_events(np.array([0.1]), np.array([700]))


def test_tonic_reads_our_file(tmp_path):
    tonic = pytest.importorskip("tonic")
    times, units, labels, speakers = _samples(5)
    root = tmp_path / "root"
    write_shd(root / "SHD" / "shd_train.h5", times, units, labels, speakers, KEYS)
    (root / "SHD" / "shd_train.h5.zip").touch()  # tonic's offline existence check
    ds = tonic.datasets.SHD(save_to=str(root), train=True)
    assert len(ds) == 5 and [str(k.decode() if isinstance(k, bytes) else k) for k in ds.classes] == KEYS
    events, label = ds[1]
    assert label == labels[1]
    np.testing.assert_array_equal(events["x"], units[1])
    np.testing.assert_allclose(events["t"], times[1].astype(np.float16).astype(np.float64) * 1e6, atol=1)


def _write_task_files(folder, n_train=40, n_test=10):
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        times, units, labels, speakers = _samples(n, seed)
        write_shd(folder / f"shd_{split}.h5", times, units, labels, speakers, KEYS)


def test_shd_task_splits_shapes_and_raster(tmp_path):
    from spikestab.data import load_task, make_loader

    _write_task_files(tmp_path)
    task = load_task("shd", tmp_path)
    assert (task.kind, task.input_size, task.output_size, task.n_steps) == ("classification", 700, 4, 250)
    assert task.class_names == KEYS
    assert (len(task.train), len(task.val), len(task.test)) == (38, 2, 10)  # first 95 % / last 5 %
    times, units, labels, _ = _samples(40, 1)
    for split, offset in ((task.train, 0), (task.val, 38)):  # order kept: val = the last samples
        for i in range(len(split)):
            x, y = split[i]
            assert y == labels[offset + i]
            t16 = times[offset + i].astype(np.float16)  # the file stores float16 times
            np.testing.assert_array_equal(x.numpy(), bin_spikes(t16, units[offset + i]))
    x, y = next(iter(make_loader(task.test, 4, shuffle=False)))
    assert x.shape == (250, 4, 700) and x.dtype.is_floating_point and y.dtype == torch.int64


def test_shd_task_options_and_tonic_layout(tmp_path):
    from spikestab.data import load_task

    _write_task_files(tmp_path / "SHD")
    task = load_task("shd", tmp_path, dt=0.01, n_steps=50, counts=True, time_repeat=2)
    times, units, _, _ = _samples(40, 1)
    ref = np.repeat(bin_spikes(times[0].astype(np.float16), units[0], dt=0.01, n_steps=50, counts=True), 2, axis=0)
    assert task.n_steps == 100
    np.testing.assert_array_equal(task.train[0][0].numpy(), ref)


def test_shd_task_bad_input(tmp_path):
    from spikestab.data import load_task

    with pytest.raises(FileNotFoundError, match="put shd_train.h5 and shd_test.h5"):
        load_task("shd", tmp_path / "missing")
    _write_task_files(tmp_path)
    times, units, labels, speakers = _samples(4)
    write_shd(tmp_path / "shd_test.h5", times, units, labels, speakers, KEYS[::-1])
    with pytest.raises(ValueError, match="different extra/keys"):
        load_task("shd", tmp_path)
    with pytest.raises(ValueError, match="unknown option"):
        load_task("shd", tmp_path, bins=3)
