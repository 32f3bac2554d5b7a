"""Event data: the simulated saccades (bounds, timing, the closed path's ON/OFF balance), binning against a
hand count, tonic compatibility, and the N-MNIST and AEDAT 3.1 readers on fixture files written here from
the formats' documentation."""

import numpy as np
import pytest

from spikestab.data.events import (
    EVENT_DTYPE,
    frames_tensor,
    make_nmnist_like,
    read_aedat31,
    read_dvs_gesture,
    read_nmnist_bin,
    read_nmnist_folder,
    saccade_events,
    to_frames,
)


def digits(n=6, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        r, c = rng.integers(4, 20, 2)
        img[i, r : r + 6, c : c + 4] = rng.uniform(0.5, 1.0)
    return img


def test_saccades_bounds_timing_and_balance():
    ev = saccade_events(digits(), seed=1)
    assert len(ev) == 6 and all(e.dtype == EVENT_DTYPE for e in ev)
    for e in ev:
        assert len(e) > 50 and np.all(np.diff(e["t"]) >= 0)
        assert e["x"].min() >= 0 and e["x"].max() < 34 and e["y"].min() >= 0 and e["y"].max() < 34
        assert e["t"].min() >= 0 and e["t"].max() < 300_000 and set(np.unique(e["p"])) == {0, 1}
        # the third saccade returns to the start: every pixel ends where it began, so ON and OFF balance
        on = np.zeros((34, 34), int)
        np.add.at(on, (e["y"], e["x"]), np.where(e["p"] == 1, 1, -1))
        assert not on.any()
    again = saccade_events(digits(), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(ev, again))
    assert len(saccade_events(np.zeros((1, 28, 28)))[0]) == 0  # a blank image emits nothing


def test_frames_match_hand_count_and_tonic():
    e = saccade_events(digits(1), seed=2)[0]
    frames = to_frames(e, (34, 34, 2), 10, 300_000)
    hand = np.zeros_like(frames)
    for x, y, t, p in e[["x", "y", "t", "p"]].tolist():
        hand[t // 30_000, p, y, x] += 1
    assert np.array_equal(frames, hand) and frames.sum() == len(e)
    import tonic

    tf = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=30_000)(e)  # drops the last partial window
    assert tf.shape[1:] == (2, 34, 34) and 0.8 * len(e) <= tf.sum() <= len(e)
    assert (tf.sum(0) <= frames.sum(0)).all()  # same layout (polarity, y, x) as ours


def test_make_nmnist_like_from_given_digits():
    imgs = digits(8).reshape(8, 784)
    data = make_nmnist_like(imgs, np.arange(8), n=5, seed=3)
    assert len(data) == 5 and data.sensor_size == (34, 34, 2) and sorted(data.labels) != list(range(5))
    x = frames_tensor(data, 12, 300_000)
    assert x.shape == (5, 12, 2, 34, 34) and x.max() == 1 and x.float().mean() > 0
    with pytest.raises(ValueError, match="n must be"):
        make_nmnist_like(imgs, np.arange(8), n=9)


def write_nmnist_bin(path, x, y, p, ts_us):
    """The N-MNIST format: 5 bytes per event (x, y, p<<7 | ts[22:16], ts[15:8], ts[7:0])."""
    b = np.zeros((len(x), 5), np.uint8)
    b[:, 0], b[:, 1] = x, y
    b[:, 2] = (p << 7) | ((ts_us >> 16) & 127)
    b[:, 3], b[:, 4] = (ts_us >> 8) & 255, ts_us & 255
    b.tofile(path)


def test_nmnist_reader(tmp_path):
    rng = np.random.default_rng(0)
    for digit in (3, 7):
        folder = tmp_path / "Train" / str(digit)
        folder.mkdir(parents=True)
        n = 40
        x, y, p = rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n)
        t = np.sort(rng.integers(0, 300_000, n))
        write_nmnist_bin(folder / "00001.bin", x, y, p, t)
    data = read_nmnist_folder(tmp_path, "Train")
    assert list(data.labels) == [3, 7]
    e = data.events[1]
    assert np.array_equal(e["x"], x) and np.array_equal(e["y"], y) and np.array_equal(e["p"], p)
    assert np.array_equal(e["t"], t)
    # a timestamp-overflow record (y == 240) adds 2^13 us to the events after it and is dropped
    write_nmnist_bin(
        tmp_path / "o.bin", np.array([1, 0, 2]), np.array([2, 240, 3]), np.array([1, 0, 0]), np.array([5, 0, 9])
    )
    o = read_nmnist_bin(tmp_path / "o.bin")
    assert o["t"].tolist() == [5, 9 + 8192] and o["x"].tolist() == [1, 2]
    (tmp_path / "bad.bin").write_bytes(b"1234")
    with pytest.raises(ValueError, match="5 bytes"):
        read_nmnist_bin(tmp_path / "bad.bin")


def aedat_packet(etype, size, overflow, payload, count):
    header = np.array([etype, 1], "<i2").tobytes() + np.array([size, 4, overflow, count, count, count], "<i4").tobytes()
    return header + payload


def polarity_payload(x, y, p, ts, valid):
    u32 = np.uint32
    data = (x.astype(u32) << 17) | (y.astype(u32) << 2) | (p.astype(u32) << 1) | valid.astype(u32)
    rec = np.zeros(len(x), np.dtype([("data", "<u4"), ("ts", "<i4")]))
    rec["data"], rec["ts"] = data, ts
    return rec.tobytes()


def test_aedat31_and_dvs_gesture_reader(tmp_path):
    x, y, p = np.array([5, 127, 64, 3]), np.array([9, 0, 127, 3]), np.array([1, 0, 1, 1])
    ts, valid = np.array([100, 2_000, 5_000, 6_000]), np.array([1, 1, 1, 0])
    body = aedat_packet(1, 8, 0, polarity_payload(x, y, p, ts, valid), 4)
    body += aedat_packet(0, 8, 0, bytes(16), 2)  # a special-event packet: skipped
    body += aedat_packet(
        1, 8, 1, polarity_payload(np.array([7]), np.array([8]), np.array([0]), np.array([10]), np.array([1])), 1
    )
    path = tmp_path / "user01_fluorescent.aedat"
    path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n" + body)
    e = read_aedat31(path)
    assert e["x"].tolist() == [5, 127, 64, 7] and e["y"].tolist() == [9, 0, 127, 8] and e["p"].tolist() == [1, 0, 1, 0]
    assert e["t"].tolist() == [100, 2_000, 5_000, (1 << 31) + 10]  # invalid event dropped, overflow applied
    csv = tmp_path / "user01_fluorescent_labels.csv"
    csv.write_text("class,startTime_usec,endTime_usec\n1,0,3000\n11,4000,9000\n")
    data = read_dvs_gesture(path, csv)
    assert data.labels.tolist() == [0, 10] and data.sensor_size == (128, 128, 2)
    assert data.events[0]["t"].tolist() == [100, 2_000] and data.events[1]["t"].tolist() == [1_000]
    (tmp_path / "bad.aedat").write_bytes(b"#!AER-DAT2.0\r\n")
    with pytest.raises(ValueError, match="AEDAT 3"):
        read_aedat31(tmp_path / "bad.aedat")
