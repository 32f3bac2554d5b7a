"""SHD h5 files: round trip, binning against a hand count, label order from the file, bad files."""

from pathlib import Path

import h5py
import numpy as np
import pytest

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
    assert sorted(zip(step.tolist(), chan.tolist(), cnt.tolist())) == [
        (0, 2, 1), (0, 7, 2), (2, 7, 1), (4, 0, 1)]
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
