"""Spiking Heidelberg Digits (SHD) h5 files: reader, atomic writer and time binning.

File layout (Cramer et al. 2020, zenkelab SHD page; data.md section 3)::

    /spikes/times    (N,) vlen float16   spike times in seconds, per sample
    /spikes/units    (N,) vlen uint16    channel ids 0..699
    /labels          (N,) uint16         class id
    /extra/speaker   (N,) uint16         speaker id
    /extra/keys      (C,) bytes          class names, index = label
    /extra/meta_info/{gender (S,) bytes, age (S,) uint16, body_height (S,) float32}   per speaker

Channel convention: the unit id is the input channel (unit u -> channel u, 700 channels). The
paper's code used ``700 - unit`` and dropped unit 0; that is a fixed relabelling of channels with no
effect on a fully connected network, so the natural order is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_CHANNELS = 700


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is in the "data" extra
        raise ImportError("reading SHD files needs h5py: pip install 'spikestab[data]'") from err
    return h5py


def _first_bad(values: Sequence[np.ndarray], bad: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int, Any] | None:
    """(sample, spike, value) of the first value, over all samples in order, for which ``bad`` holds."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    if not lengths.sum():
        return None
    flat = np.concatenate([np.asarray(v) for v in values])
    hits = np.flatnonzero(bad(flat))
    if not len(hits):
        return None
    k = int(hits[0])
    ends = np.cumsum(lengths)
    sample = int(np.searchsorted(ends, k, side="right"))
    return sample, k - int(ends[sample - 1] if sample else 0), flat[k]


def _show(value: Any) -> str:
    return "NaN" if np.isnan(value) else f"{value:g}"


def check_spike_times(times: Sequence[np.ndarray], where: str) -> None:
    """ValueError naming ``where`` (e.g. "file.h5: spikes/times") and the first sample with a NaN,
    infinite or negative spike time."""
    hit = _first_bad(times, lambda t: ~(np.isfinite(t) & (t >= 0)))
    if hit is not None:
        sample, spike, value = hit
        raise ValueError(
            f"{where} of sample {sample} holds the spike time {_show(float(value))} (spike {spike}); "
            f"spike times must be finite seconds >= 0"
        )


def read_shd(path: str | os.PathLike, n_channels: int = N_CHANNELS) -> dict[str, Any]:
    """Read an SHD h5 file into numpy arrays.

    Returns ``dict(times, units, labels, speakers, keys, meta)``: ``times`` a list of float32 arrays
    (seconds; exact copies of the stored float16), ``units`` a list of int32 arrays, ``labels`` and
    ``speakers`` int64 arrays, ``keys`` the class names (``keys[label]``), ``meta`` the per-speaker
    ``extra/meta_info`` arrays (empty if absent).
    Raises FileNotFoundError for a missing file and ValueError for a file that is not a complete SHD file,
    or whose spikes are bad: a NaN, infinite or negative spike time, or a unit outside
    ``[0, n_channels - 1]`` (the message names the file, the field and the first bad sample).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SHD file not found: {path}")
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("spikes/times", "spikes/units", "labels", "extra/keys") if k not in f]
            data = None if missing else _datasets(f)
    except Exception as err:  # damaged files: h5py raises OSError, RuntimeError, KeyError, TypeError, ...
        raise ValueError(
            f"{path} is not a readable HDF5 file (corrupt or truncated?): {type(err).__name__}: {err}"
        ) from err
    if data is None:
        raise ValueError(f"{path} is not an SHD file: missing datasets {missing}")
    _check(path, data, n_channels)
    return data


def _datasets(f: Any) -> dict[str, Any]:
    """The arrays of an open SHD h5 file (see :func:`read_shd`)."""
    labels = np.asarray(f["labels"][()], dtype=np.int64)
    speaker = f["extra/speaker"][()] if "extra/speaker" in f else np.full(len(labels), -1)
    return dict(
        times=[np.asarray(t, dtype=np.float32) for t in f["spikes/times"][()]],
        units=[np.asarray(u, dtype=np.int32) for u in f["spikes/units"][()]],
        labels=labels,
        speakers=np.asarray(speaker, dtype=np.int64),
        keys=[k.decode() if isinstance(k, bytes) else str(k) for k in f["extra/keys"][()]],
        meta={k: np.asarray(v[()]) for k, v in f["extra/meta_info"].items()} if "extra/meta_info" in f else {},
    )


def _check(path: Path, data: dict[str, Any], n_channels: int) -> None:
    """ValueError naming ``path`` when the arrays read from it do not form SHD samples."""
    times, units, labels, speakers, keys = (data[k] for k in ("times", "units", "labels", "speakers", "keys"))
    n = len(labels)
    if not (len(times) == len(units) == n == len(speakers)):
        raise ValueError(
            f"{path}: inconsistent sample counts: times {len(times)}, units {len(units)}, "
            f"labels {n}, speakers {len(speakers)}"
        )
    for i, (t, u) in enumerate(zip(times, units)):
        if len(t) != len(u):
            raise ValueError(f"{path}: sample {i} has {len(t)} spike times but {len(u)} units")
    if n and (labels.min() < 0 or labels.max() >= len(keys)):
        raise ValueError(f"{path}: labels must lie in [0, {len(keys) - 1}] (one per extra/keys entry)")
    check_spike_times(times, f"{path}: spikes/times")
    hit = _first_bad(units, lambda u: (u < 0) | (u >= n_channels))
    if hit is not None:
        sample, spike, value = hit
        raise ValueError(
            f"{path}: spikes/units of sample {sample} holds the unit {int(value)} (spike {spike}); "
            f"units must lie in [0, {n_channels - 1}]"
        )


def write_shd(
    path: str | os.PathLike,
    times: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    speakers: Sequence[int] | np.ndarray,
    keys: Sequence[str],
    meta: dict[str, Sequence | np.ndarray] | None = None,
) -> Path:
    """Write samples in the exact SHD h5 layout, atomically (temporary file, then ``os.replace``).

    ``meta`` holds the per-speaker arrays ``gender`` (str), ``age`` (int), ``body_height`` (float); when
    None, placeholders are written ("unknown", 0, nan) for speakers ``0..max(speakers)`` so that the
    layout stays complete. Returns the path written.
    """
    path = Path(path)
    label_ids, speaker_ids = np.asarray(labels), np.asarray(speakers)
    n = len(label_ids)
    if not (len(times) == len(units) == n == len(speaker_ids)):
        raise ValueError(
            f"times, units, labels and speakers must have one entry per sample; got "
            f"{len(times)}, {len(units)}, {n}, {len(speaker_ids)}"
        )
    if n and (label_ids.min() < 0 or label_ids.max() >= len(keys)):
        raise ValueError(f"labels must lie in [0, {len(keys) - 1}] (one class name per label in keys)")
    if n and (speaker_ids.min() < 0 or speaker_ids.max() > np.iinfo(np.uint16).max):
        raise ValueError("speakers must be ids in [0, 65535]")
    check_spike_times([np.asarray(t, dtype=np.float64) for t in times], "times")
    for i, (t, u) in enumerate(zip(times, units)):
        if len(t) != len(u):
            raise ValueError(f"sample {i}: {len(t)} spike times but {len(u)} units")
        if len(u) and (np.min(u) < 0 or np.max(u) > np.iinfo(np.uint16).max):
            raise ValueError(f"sample {i}: units must lie in [0, 65535]")
    if meta is None:
        n_spk = int(speaker_ids.max()) + 1 if n else 0
        meta = dict(gender=["unknown"] * n_spk, age=np.zeros(n_spk), body_height=np.full(n_spk, np.nan))
    for k in ("gender", "age", "body_height"):
        if k not in meta:
            raise ValueError(f"meta must hold 'gender', 'age' and 'body_height'; missing {k!r}")

    h5py = _h5py()
    path.parent.mkdir(parents=True, exist_ok=True)
    # h5py creates the temporary file itself, so it gets the usual umask permissions (mkstemp's 0600
    # would make the dataset unreadable for other users after the rename)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            ts = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
            us = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
            for i, (t, u) in enumerate(zip(times, units)):
                ts[i] = np.asarray(t, dtype=np.float16)
                us[i] = np.asarray(u, dtype=np.uint16)
            f["labels"] = label_ids.astype(np.uint16)
            f["extra/speaker"] = speaker_ids.astype(np.uint16)
            f["extra/keys"] = np.array([str(k).encode() for k in keys])
            f["extra/meta_info/gender"] = np.array([str(g).encode() for g in meta["gender"]])
            f["extra/meta_info/age"] = np.asarray(meta["age"]).astype(np.uint16)
            f["extra/meta_info/body_height"] = np.asarray(meta["body_height"], dtype=np.float32)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def bin_events(
    times: np.ndarray, units: np.ndarray, *, dt: float = 4e-3, n_steps: int = 250, n_channels: int = N_CHANNELS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin one sample's spikes into ``n_steps`` bins of ``dt`` seconds, as sparse (step, channel, count).

    Spike at time t goes to step ``floor(t / dt)``; spikes at or after ``n_steps * dt`` (and negative
    times) are dropped. Each (step, channel) pair appears once, with the number of spikes in it.
    """
    if dt <= 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    times = np.asarray(times, dtype=np.float64)
    units = np.asarray(units, dtype=np.int64)
    if len(units) and (units.min() < 0 or units.max() >= n_channels):
        raise ValueError(f"units must lie in [0, {n_channels - 1}], got range [{units.min()}, {units.max()}]")
    steps = np.floor(times / dt).astype(np.int64)
    keep = (steps >= 0) & (steps < n_steps)
    flat = steps[keep] * n_channels + units[keep]
    cells, counts = np.unique(flat, return_counts=True)
    return cells // n_channels, cells % n_channels, counts


def bin_spikes(
    times: np.ndarray,
    units: np.ndarray,
    *,
    dt: float = 4e-3,
    n_steps: int = 250,
    n_channels: int = N_CHANNELS,
    counts: bool = False,
) -> np.ndarray:
    """Dense ``[n_steps, n_channels]`` float32 raster of one sample: 1 where a channel fires in a bin
    (or the spike count with ``counts=True``). See ``bin_events`` for the binning rule."""
    step, chan, cnt = bin_events(times, units, dt=dt, n_steps=n_steps, n_channels=n_channels)
    out = np.zeros((n_steps, n_channels), dtype=np.float32)
    out[step, chan] = cnt if counts else 1.0
    return out
