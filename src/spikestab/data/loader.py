"""Compact spike datasets densified per batch, their seeded loader, and stateful language-model batches.

A ``SpikeDataset`` keeps each sample as a sparse list of (time step, channel, count) events in flat
CSR-style arrays (int16 steps and channels, one offset per sample), so that a 60k-sample sl-MNIST or an
8k-sample SHD split takes megabytes, and builds the dense ``[T, B, N]`` float32 tensor only for the batch
being used, or, for training, the batch as a sparse COO tensor without its dense form
(``sparse_batch``). Time repetition (docs/theory.md, "Tasks"; ``np.repeat`` along time: frame t becomes
frames k*t .. k*t+k-1) happens there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

# Up to this fraction of non-zero entries a sparse batch costs less than a dense one: a dense batch costs
# about 2.3 ns per entry (zeroing a fresh tensor, the projection's scan for non-zeros), a sparse one about
# 90 ns per event (sorting the events, the CSR index from them); measured with benchmarks/profile_epoch.py's
# configurations on one thread: sl-MNIST (0.25 %) 10x less, SHD-shaped (5 %) 2x more.
SPARSE_BATCH_DENSITY = 0.01


class SpikeDataset(Dataset):
    """Spike rasters of shape ``[n_steps, n_channels]`` with integer labels, stored as sparse events.

    ``steps``/``channels`` hold the events of all samples back to back, sample i owning
    ``offsets[i]:offsets[i+1]``; ``counts`` (optional) is the value written at each event (1 if None).
    Each (step, channel) pair must appear at most once per sample. ``input_dropout`` is the probability
    with which ``make_loader`` deletes each input entry of a batch (set on training splits only).
    """

    def __init__(
        self,
        steps: np.ndarray,
        channels: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        base_steps: int,
        n_channels: int,
        counts: np.ndarray | None = None,
        *,
        time_repeat: int = 1,
        input_dropout: float = 0.0,
    ) -> None:
        if base_steps < 1 or n_channels < 1:
            raise ValueError(f"base_steps and n_channels must be >= 1, got {base_steps}, {n_channels}")
        check_options(time_repeat, input_dropout)
        steps, channels = np.asarray(steps), np.asarray(channels)
        offsets = np.asarray(offsets, dtype=np.int64)
        if (
            offsets[0] != 0
            or offsets[-1] != len(steps)
            or len(steps) != len(channels)
            or len(offsets) != len(labels) + 1
            or np.any(np.diff(offsets) < 0)
        ):
            raise ValueError("offsets must run from 0 to the number of events, one entry per sample + 1")
        if len(steps) and (
            steps.min() < 0 or steps.max() >= base_steps or channels.min() < 0 or channels.max() >= n_channels
        ):
            raise ValueError(f"events must lie in steps [0, {base_steps - 1}], channels [0, {n_channels - 1}]")
        self.steps = np.asarray(steps, dtype=np.int16 if base_steps <= 2**15 else np.int32)
        self.channels = np.asarray(channels, dtype=np.int16 if n_channels <= 2**15 else np.int32)
        self.counts = None if counts is None else np.asarray(counts, dtype=np.float32)
        self.offsets = offsets
        self.labels = np.asarray(labels, dtype=np.int64)
        self.base_steps, self.n_channels = int(base_steps), int(n_channels)
        self.time_repeat, self.input_dropout = int(time_repeat), float(input_dropout)

    @classmethod
    def from_latencies(cls, latencies: np.ndarray, labels: np.ndarray, base_steps: int, **kwargs) -> SpikeDataset:
        """One spike at most per channel: ``latencies[i, c]`` is the step at which channel c of sample i
        fires, or -1 for no spike (sl-MNIST latency code, Randman)."""
        latencies = np.asarray(latencies)
        sample, chan = np.nonzero(latencies >= 0)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=len(latencies)))])
        return cls(latencies[sample, chan], chan, offsets, labels, base_steps, latencies.shape[1], **kwargs)

    @classmethod
    def from_events(
        cls,
        events: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        labels: np.ndarray,
        base_steps: int,
        n_channels: int,
        counts: bool = False,
        **kwargs,
    ) -> SpikeDataset:
        """Samples given as (steps, channels, counts) triples with unique (step, channel) pairs, as
        returned by ``shd.bin_events``; ``counts=False`` keeps a binary raster."""
        lengths = [len(e[0]) for e in events]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def cat(k: int, dtype: type) -> np.ndarray:  # per-sample casts keep the peak memory small
            return np.concatenate([np.asarray(e[k], dtype) for e in events]) if events else np.zeros(0, dtype)

        small = np.int16 if max(base_steps, n_channels) <= 2**15 else np.int32
        return cls(
            cat(0, small),
            cat(1, small),
            offsets,
            labels,
            base_steps,
            n_channels,
            cat(2, np.float32) if counts else None,
            **kwargs,
        )

    @property
    def density(self) -> float:
        """The fraction of non-zero entries of its samples (time repetition leaves it unchanged)."""
        return len(self.steps) / max(len(self) * self.base_steps * self.n_channels, 1)

    @property
    def n_steps(self) -> int:
        """Time steps per sample after time repetition."""
        return self.base_steps * self.time_repeat

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.densify([index])[:, 0], int(self.labels[index])

    def subset(self, indices: Sequence[int] | np.ndarray, *, input_dropout: float | None = None) -> SpikeDataset:
        """A new dataset holding the given samples in the given order (for splits)."""
        idx = np.asarray(indices, dtype=np.int64)
        pos, lens = self._positions(idx)
        return SpikeDataset(
            self.steps[pos],
            self.channels[pos],
            np.concatenate([[0], np.cumsum(lens)]),
            self.labels[idx],
            self.base_steps,
            self.n_channels,
            None if self.counts is None else self.counts[pos],
            time_repeat=self.time_repeat,
            input_dropout=self.input_dropout if input_dropout is None else input_dropout,
        )

    def densify(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Dense time-first batch ``[n_steps, len(indices), n_channels]`` float32 (no dropout)."""
        idx = np.asarray(indices, dtype=np.int64)
        pos, lens = self._positions(idx)
        x = torch.zeros(self.base_steps, len(idx), self.n_channels, device="cpu")  # batches are built on the host
        b = np.repeat(np.arange(len(idx)), lens)
        values = torch.ones(len(pos), device="cpu") if self.counts is None else torch.from_numpy(self.counts[pos])
        x[
            torch.from_numpy(self.steps[pos].astype(np.int64)),
            torch.from_numpy(b),
            torch.from_numpy(self.channels[pos].astype(np.int64)),
        ] = values
        return x.repeat_interleave(self.time_repeat, dim=0) if self.time_repeat > 1 else x

    def sparse_batch(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """``densify(indices)`` as a coalesced sparse COO tensor (float32, its non-zeros only): the same
        batch at a fraction of the memory (28 bytes per spike instead of 4 per entry) and of the time."""
        idx = np.asarray(indices, dtype=np.int64)
        pos, lens = self._positions(idx)
        t = self.steps[pos].astype(np.int64)
        b = np.repeat(np.arange(len(idx)), lens)
        c = self.channels[pos].astype(np.int64)
        v = np.ones(len(pos), np.float32) if self.counts is None else self.counts[pos]
        k = self.time_repeat
        if k > 1:  # frame t becomes frames k*t .. k*t+k-1
            t = (t[:, None] * k + np.arange(k)).ravel()
            b, c, v = np.repeat(b, k), np.repeat(c, k), np.repeat(v, k)
        keep = v != 0
        t, b, c, v = t[keep], b[keep], c[keep], v[keep]
        order = _row_major(t, b, c)
        index = torch.from_numpy(np.stack([t[order], b[order], c[order]]))
        shape = (self.n_steps, len(idx), self.n_channels)
        values = torch.from_numpy(np.ascontiguousarray(v[order], dtype=np.float32))
        return torch.sparse_coo_tensor(index, values, shape, is_coalesced=True, check_invariants=False)

    def _positions(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range for a dataset of {len(self)} samples")
        idx = idx % max(len(self), 1)
        starts, lens = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        first = np.cumsum(lens) - lens
        pos = np.arange(lens.sum()) - np.repeat(first, lens) + np.repeat(starts, lens)
        return pos, lens


def _row_major(t: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The order of events (step t, sample b, channel c) by step, then sample, then channel: three stable
    sorts, last key first (radix sorts where the keys fit in 16 bits: 3x faster than np.lexsort)."""
    order = np.arange(len(t))
    for key in (c, b, t):
        small = key.astype(np.int16) if key.size and key.max() < 2**15 else key
        order = order[np.argsort(small[order], kind="stable")]
    return order


def sparse_batches_pay(dataset: SpikeDataset) -> bool:
    """Whether sparse batches (``SpikeLoader(sparse=True)``) apply to this dataset (no input dropout) and cost
    less than dense ones (at most ``SPARSE_BATCH_DENSITY`` of its entries non-zero)."""
    return dataset.input_dropout == 0 and dataset.density <= SPARSE_BATCH_DENSITY


def check_options(time_repeat: int, input_dropout: float) -> None:
    """ValueError unless time_repeat is an integer >= 1 and input_dropout lies in [0, 1)."""
    if int(time_repeat) != time_repeat or time_repeat < 1:
        raise ValueError(f"time_repeat must be an integer >= 1, got {time_repeat}")
    if not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"input_dropout must lie in [0, 1), got {input_dropout}")


class SpikeLoader:
    """Iterates a ``SpikeDataset`` in time-first batches ``(x [T, B, N] float32, y [B] int64)``.

    The order and the input-dropout masks of epoch e depend only on (seed, e), so runs are reproducible
    and a resumed run can replay an epoch: each ``iter()`` uses the current epoch and then advances it;
    ``set_epoch`` chooses it explicitly. ``sparse=True`` yields x as a sparse COO tensor
    (``SpikeDataset.sparse_batch``: the same batch without building its dense form; the spiking stack
    reads it as it is); not with input dropout, whose masks are drawn over the dense batch.
    """

    def __init__(
        self,
        dataset: SpikeDataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        sparse: bool = False,
    ) -> None:
        if not isinstance(dataset, SpikeDataset):
            raise ValueError(f"dataset must be a SpikeDataset, got {type(dataset).__name__}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), bool(shuffle)
        if sparse and dataset.input_dropout > 0:
            raise ValueError(
                "sparse batches need a dataset without input dropout (its masks are drawn over the dense "
                f"batch), got input_dropout={dataset.input_dropout}"
            )
        self.seed, self.drop_last, self.epoch = int(seed), bool(drop_last), 0
        self.sparse = bool(sparse)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s order and dropout masks."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        p = self.dataset.input_dropout
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            if self.sparse:
                yield self.dataset.sparse_batch(idx), torch.from_numpy(self.dataset.labels[idx])
                continue
            x = self.dataset.densify(idx)
            if p > 0:
                x = x * (torch.rand(x.shape, generator=gen) >= p)
            yield x, torch.from_numpy(self.dataset.labels[idx])


def make_loader(
    dataset: SpikeDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    sparse: bool = False,
) -> SpikeLoader:
    """Seeded batch iterator over a ``SpikeDataset``; input dropout (deleting each input entry with the
    dataset's ``input_dropout`` probability, without rescaling, so spikes stay spikes) is applied here;
    ``sparse``: batches as sparse COO tensors (``SpikeLoader``)."""
    return SpikeLoader(dataset, batch_size, shuffle, seed, drop_last, sparse)


def lm_batches(
    ids: torch.Tensor, batch_size: int, seq_len: int, *, time_repeat: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous, stateful language-model windows ``(inputs [T, B], targets [T, B])``.

    The token stream is cut into ``batch_size`` equal rows (row b = tokens b*n .. b*n+n-1), and windows of
    ``seq_len`` steps walk along the rows, so row b of window k+1 continues row b of window k and the
    recurrent state can be carried over. Targets are the inputs shifted by one token. The last window
    may be shorter. With ``time_repeat`` k, every input and its target is repeated k times in a row
    (T = k * seq_len), as in docs/theory.md, "Tasks".
    """
    ids = torch.as_tensor(ids)
    if ids.ndim != 1 or ids.dtype != torch.int64:
        raise ValueError(f"ids must be a 1-D LongTensor of token ids, got {tuple(ids.shape)} {ids.dtype}")
    if int(batch_size) != batch_size or batch_size < 1 or int(seq_len) != seq_len or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be integers >= 1, got {batch_size}, {seq_len}")
    check_options(time_repeat, 0.0)
    if len(ids) < batch_size + 1:
        raise ValueError(f"need at least batch_size + 1 = {batch_size + 1} tokens, got {len(ids)}")
    n = (len(ids) - 1) // batch_size
    inputs = ids[: n * batch_size].view(batch_size, n).t()
    targets = ids[1 : n * batch_size + 1].view(batch_size, n).t()

    def windows() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n, seq_len):
            x, y = inputs[start : start + seq_len], targets[start : start + seq_len]
            if time_repeat > 1:
                x, y = x.repeat_interleave(time_repeat, 0), y.repeat_interleave(time_repeat, 0)
            yield x.contiguous(), y.contiguous()

    return windows()
