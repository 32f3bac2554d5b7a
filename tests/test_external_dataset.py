"""A dataset from outside spikestab trains through ``Trainer``: a real tonic N-MNIST dataset read from
generated ``.bin`` files in tonic's layout (tonic's own reader and transforms, no download), and a plain torch
``Dataset`` of ``[T, N]`` tensors, both turned into a ``Task`` by ``data.external.task_from_datasets``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tonic
import torch
from torch.utils.data import TensorDataset

from spikestab.cli import main
from spikestab.data.external import task_from_datasets
from spikestab.sweep.space import canonical
from spikestab.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_nmnist_bin(path, x, y, p, ts_us):
    """N-MNIST's 40-bit event records: x, y, polarity << 7 | time[22:16], time[15:8], time[7:0] (µs)."""
    b = np.zeros((len(x), 5), np.uint8)
    b[:, 0], b[:, 1] = x, y
    b[:, 2] = (p << 7) | ((ts_us >> 16) & 127)
    b[:, 3], b[:, 4] = (ts_us >> 8) & 255, ts_us & 255
    b.tofile(path)


class NMNIST(tonic.datasets.NMNIST):  # tonic's folder is the class name: the subclass keeps it
    """tonic's N-MNIST on files already in place (``_check_exists`` would want the 60,000 real ones)."""

    def _check_exists(self):
        return True


def _nmnist(root, split, per_class, rng):
    """Four classes of events on a 34 x 34 sensor: class c fires in rows 8c .. 8c + 7, ON then OFF."""
    for c in range(4):
        folder = root / "NMNIST" / split / str(c)
        folder.mkdir(parents=True)
        for k in range(per_class):
            n = 80
            t = np.sort(rng.integers(0, 100_000, n))
            _write_nmnist_bin(
                folder / f"{k:05d}.bin",
                rng.integers(0, 34, n),
                rng.integers(8 * c, 8 * c + 8, n),
                (t > 50_000).astype(np.uint8),
                t,
            )


def test_a_tonic_dataset_trains_through_the_trainer(tmp_path):
    rng = np.random.default_rng(0)
    _nmnist(tmp_path, "Train", 30, rng)
    _nmnist(tmp_path, "Test", 8, rng)
    # tonic's transforms: 34 x 34 -> 9 x 9 (events merge), then 20 frames of [2, 9, 9] counts
    frames = tonic.transforms.Compose(
        [
            tonic.transforms.Downsample(spatial_factor=0.25),
            tonic.transforms.ToFrame(sensor_size=(9, 9, 2), n_time_bins=20),
        ]
    )
    train = NMNIST(save_to=str(tmp_path), train=True, transform=frames)
    test = NMNIST(save_to=str(tmp_path), train=False, transform=frames)
    assert (len(train), len(test)) == (120, 32) and train[0][0].shape == (20, 2, 9, 9)

    task = task_from_datasets(train, test, val_fraction=0.2, name="nmnist-local")
    assert (task.input_size, task.output_size, task.n_steps) == (162, 4, 20)
    assert (len(task.train), len(task.val), len(task.test)) == (96, 24, 32)
    x0 = torch.as_tensor(train[0][0], dtype=torch.float32).reshape(20, -1)
    dense = torch.cat([task.train.densify(range(len(task.train))), task.val.densify(range(len(task.val)))], 1)
    assert x0.max() > 1 and any(torch.equal(dense[:, j], x0) for j in range(dense.shape[1]))  # counts kept

    cfg = TrainConfig(
        layers=(32,),
        epochs=3,
        batch_size=16,
        lr=5e-3,
        out=str(tmp_path / "run"),
        progress=False,
        threads=1,
        checkpoint_every=1000,
    )
    result = Trainer(cfg, task=task, log=lambda s: None).fit()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert result["test"]["accuracy"] >= 0.5, result["test"]  # chance 0.25: the rows tell the classes apart


def test_a_torch_dataset_of_rasters_becomes_a_task(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = (torch.rand(40, 15, 6, generator=g) < 0.2).float()
    x[y == 1, :, :3] = 0  # class 1 is silent on channels 0-2
    val = TensorDataset(x[:8], y[:8])
    short = [(x[i, :10], int(y[i])) for i in range(8)]  # shorter samples end in silent steps
    task = task_from_datasets(TensorDataset(x, y), short, val, class_names=["a", "b"])
    assert (task.input_size, task.output_size, task.n_steps, task.class_names) == (6, 2, 15, ["a", "b"])
    assert len(task.train) == 40 and len(task.val) == 8 and task.train.counts is None  # binary: no counts
    assert torch.equal(task.train.densify([3])[:, 0], x[3])
    assert torch.equal(task.test.densify([1])[10:], torch.zeros(5, 1, 6))
    # input dropout on the training split only, with or without a given val split; time repetition
    for v in (val, None):
        t2 = task_from_datasets(TensorDataset(x, y), short, v, input_dropout=0.2, time_repeat=2)
        assert (t2.train.input_dropout, t2.val.input_dropout, t2.test.input_dropout) == (0.2, 0.0, 0.0)
        assert t2.n_steps == 30 and t2.train.densify([0]).shape == (30, 1, 6)
    cfg = TrainConfig(layers=(8,), epochs=1, batch_size=8, out=str(tmp_path / "run"), progress=False, threads=1)
    assert 0.0 <= Trainer(cfg, task=task, log=lambda s: None).fit()["test"]["accuracy"] <= 1.0


def test_bad_datasets_are_refused_with_the_sample_named():
    good = [(torch.zeros(5, 3), 0), (torch.ones(5, 3), 1)]
    with pytest.raises(ValueError, match=r"train sample 1: the input must be a spike raster \[T, N\]"):
        task_from_datasets([good[0], (torch.zeros(5), 1)], good)
    with pytest.raises(ValueError, match="test sample 0: spike values must be finite counts >= 0"):
        task_from_datasets(good, [(-torch.ones(5, 3), 0)])
    with pytest.raises(ValueError, match="test sample 1: the label must be a class id >= 0"):
        task_from_datasets(good, [good[0], (torch.zeros(5, 3), -1)])
    with pytest.raises(ValueError, match="same number of channels"):
        task_from_datasets(good, [(torch.zeros(5, 4), 0)])
    with pytest.raises(ValueError, match="n_steps must be an integer >= the longest sample's 5 steps"):
        task_from_datasets(good, good, n_steps=4)
    with pytest.raises(ValueError, match="test: the split holds no sample"):
        task_from_datasets(good, [])
    with pytest.raises(ValueError, match="class_names has 1 names"):
        task_from_datasets(good, good, class_names=["only"])
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        task_from_datasets(good, good, val_fraction=1.0)


def test_an_external_run_names_its_dataset_and_resumes_from_python_only(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(48) % 2
    x = (torch.rand(48, 12, 6, generator=g) < 0.3).float()
    x[y == 1, :, :3] = 0
    train, test = TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])
    task = task_from_datasets(train, test, name="rows", description="d")
    out = tmp_path / "run"
    options = dict(layers=(8,), epochs=2, batch_size=8, out=str(out), progress=False, threads=1, checkpoint_every=2)

    def stop(trainer, step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(**options), task=task, on_step=stop, log=lambda s: None).fit()
    recorded = json.loads((out / "config.json").read_text())["external_task"]
    assert recorded == {"name": "rows", "description": "d", "input_size": 6, "classes": 2, "n_steps": 12,
                        "samples": {"train": 36, "val": 4, "test": 8}}  # fmt: skip

    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", "--resume", "--out", str(out)]) == 2  # the CLI cannot rebuild the user's dataset
    err = capsys.readouterr().err
    assert "dataset 'rows' (d) handed to Trainer from Python" in err and "fit(resume=True)" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files  # nothing written

    other = task_from_datasets(train, test, name="other")
    with pytest.raises(ValueError, match="different config.*external_task"):
        Trainer(TrainConfig(**options), task=other, log=lambda s: None).fit(resume=True)
    with pytest.raises(ValueError, match="the config records the dataset"):
        Trainer(TrainConfig.from_json(out / "config.json"), task=other)

    Trainer(TrainConfig.from_json(out / "config.json"), task=task, log=lambda s: None).fit(resume=True)
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "rows" and results["config"]["external_task"] == recorded
    assert results["global_steps"] == 10


def test_external_task_is_recorded_not_swept():
    with pytest.raises(ValueError, match="unknown option 'external_task'"):
        canonical("external_task")
