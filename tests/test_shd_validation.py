"""SHD files with bad spikes (issue 15): NaN, infinite or negative spike times and unit ids outside the
channels raise a ValueError naming the file, the field and the first bad sample, when the file is read
(they used to vanish in the binning, or fail later without saying where)."""

import re

import h5py
import numpy as np
import pytest

from spikestab.data.shd import read_shd, write_shd

KEYS = ["zero", "one", "two"]


def _good_file(path, n=6):
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 1.0, 10)) for _ in range(n)]
    units = [rng.integers(0, 700, 10) for _ in range(n)]
    return write_shd(path, times, units, np.arange(n) % 3, np.zeros(n, int), KEYS)


def _poison(path, field, sample, position, value, dtype=None):
    """Overwrite one value of one sample in the stored file, as a foreign writer might have left it."""
    with h5py.File(path, "r+") as f:
        if dtype is not None:  # re-create the field with another vlen dtype (e.g. signed units)
            old = [np.asarray(v) for v in f[field][()]]
            del f[field]
            f.create_dataset(field, (len(old),), dtype=h5py.vlen_dtype(dtype))
            for i, v in enumerate(old):
                f[field][i] = v.astype(dtype)
        row = np.array(f[field][sample])
        row[position] = value
        f[field][sample] = row


@pytest.mark.parametrize(
    "value, what",
    [
        (np.nan, "NaN"),
        (np.inf, "inf"),
        (-np.inf, "-inf"),
        (-0.25, "-0.25"),
    ],
)
def test_bad_spike_times_name_file_field_and_sample(tmp_path, value, what):
    path = _good_file(tmp_path / "x.h5")
    _poison(path, "spikes/times", 3, 4, value)
    _poison(path, "spikes/times", 5, 0, value)  # a later bad sample: the first one is named
    msg = (
        f"{path}: spikes/times of sample 3 holds the spike time {what} (spike 4); spike times must be finite "
        f"seconds >= 0"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        read_shd(path)


def test_units_outside_the_channels_name_file_field_and_sample(tmp_path):
    path = _good_file(tmp_path / "x.h5")
    _poison(path, "spikes/units", 2, 7, 700)
    msg = f"{path}: spikes/units of sample 2 holds the unit 700 (spike 7); units must lie in [0, 699]"
    with pytest.raises(ValueError, match=re.escape(msg)):
        read_shd(path)
    read_shd(path, n_channels=701)  # a file of more channels is read when asked for them


def test_negative_units_in_a_signed_field(tmp_path):
    path = _good_file(tmp_path / "x.h5")
    _poison(path, "spikes/units", 1, 0, -3, dtype=np.int32)
    with pytest.raises(ValueError, match=re.escape(f"{path}: spikes/units of sample 1 holds the unit -3 (spike 0)")):
        read_shd(path)


def test_good_files_still_read_and_the_task_loader_passes_the_error_on(tmp_path):
    from spikestab.data import load_task

    for split in ("train", "test"):
        _good_file(tmp_path / f"shd_{split}.h5", n=20)
    assert len(read_shd(tmp_path / "shd_train.h5")["times"]) == 20
    load_task("shd", tmp_path)
    _poison(tmp_path / "shd_test.h5", "spikes/times", 0, 0, np.nan)
    with pytest.raises(ValueError, match=r"shd_test.h5: spikes/times of sample 0 holds the spike time NaN"):
        load_task("shd", tmp_path)


def test_writer_refuses_the_spike_times_the_reader_refuses(tmp_path):
    times = [np.array([0.1, np.nan]), np.array([0.2])]
    with pytest.raises(ValueError, match=re.escape("times of sample 0 holds the spike time NaN (spike 1)")):
        write_shd(tmp_path / "x.h5", times, [np.array([1, 2]), np.array([3])], [0, 1], [0, 0], KEYS)
    assert not (tmp_path / "x.h5").exists()


def test_overwritten_bytes_anywhere_are_a_clear_error_naming_the_file(tmp_path):
    """64 bytes overwritten at every 128th offset: each damaged copy either still reads as valid SHD
    samples (the bytes fell in unused space or into spike values still in range) or raises ValueError
    naming the file; h5py's RuntimeError, KeyError and TypeError used to escape."""
    good = _good_file(tmp_path / "good.h5", n=20)
    data = good.read_bytes()
    refused = 0
    for offset in range(0, len(data), 128):
        bad = tmp_path / f"bad_{offset}.h5"
        bad.write_bytes(data[:offset] + bytes([0xA5]) * 64 + data[offset + 64 :])
        try:
            read_shd(bad)
        except ValueError as err:
            assert str(bad) in str(err), err
            refused += 1
    assert refused >= 5


@pytest.mark.parametrize("n_train, n_test, bad", [(0, 4, "train"), (1, 4, "train"), (4, 0, "test")])
def test_shd_files_with_too_few_samples_name_the_file(tmp_path, n_train, n_test, bad):
    """An empty file (or one training sample: the 95/5 split leaves no training batch) once ended in
    a StopIteration when training started."""
    from spikestab.data import load_task

    _good_file(tmp_path / "shd_train.h5", n=n_train)
    _good_file(tmp_path / "shd_test.h5", n=n_test)
    n = n_train if bad == "train" else n_test
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / f'shd_{bad}.h5'} holds {n} sample(s)")):
        load_task("shd", tmp_path)
