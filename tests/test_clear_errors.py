"""Clear errors before any work and before any file is written (issue 26 item 4 and leftovers): --out that
cannot hold a run, stabilize's sizes and output files, incomplete checkpoints, empty or wrongly typed
batches, --layers beyond the machine's memory, Ctrl-C during set-up, a start that fails, and the resume
message of a run whose epochs are all trained."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from spikestab.cli import main
from spikestab.data.loader import SpikeDataset
from spikestab.data.tasks import Task
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.stability import stabilize
from spikestab.train import Trainer, memory
from spikestab.train.config import TrainConfig
from test_user_set import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "out, says",
    [
        ("", "out is empty"),
        ("/proc/spikestab-run", "is under /proc, a virtual file system"),
        ("/sys/spikestab-run", "is under /sys, a virtual file system"),
        ("a" * 300, "has a folder name of 300 bytes; the file system allows 255"),
        ("/".join(["b" * 200] * 25), "bytes long as an absolute path; the file system allows"),
    ],
)
def test_out_that_cannot_hold_a_run_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, out, says):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--out", out]) == 2
    assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_stabilize_checks_its_sizes_and_output_files_before_any_work(tmp_path, capsys):
    for flags, says in (
        (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
        (["--batch", "0"], "--batch must be an integer >= 1, got 0"),
        (["--json", "/proc/spikestab.json"], "--json '/proc/spikestab.json' is on a virtual file system"),
        (["--json", str(tmp_path / "file" / "r.json")], "--json must name a file in a folder that exists"),
        (["--save", str(tmp_path / "missing" / "m.pt")], "--save must name a file in an existing folder"),
    ):
        (tmp_path / "file").write_text("")
        assert main(["stabilize", "--layers", "1x8", *flags]) == 2
        captured = capsys.readouterr()
        assert says in captured.err and captured.out == ""  # no report: nothing ran


def test_stabilize_refuses_empty_and_wrongly_typed_batches():
    model = SNNClassifier(SNNConfig(20, 3, hidden_sizes=(8,), dropout=0.0))
    x = (torch.rand(30, 4, 20) < 0.2).float()
    for empty in (x[:0], x[:, :0]):
        with pytest.raises(ValueError, match="batch is empty: the first spiking layer receives shape"):
            stabilize(model, empty)
    with pytest.raises(ValueError, match=r"as torch.float64 but the layer computes in torch.float32: pass batch.float"):
        stabilize(model, x.double())
    with pytest.raises(ValueError, match=r"as torch.int64 but the layer computes in torch.float32"):
        stabilize(model, x.long())
    assert stabilize(model, x, conditions=("D",)).layers[0].measurements["firing_rate"] > 0  # the model is intact


def _finished_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _drop(path, key, inner=None):
    ck = torch.load(path, weights_only=True)
    del (ck[inner] if inner else ck)[key]
    torch.save(ck, path)


def test_incomplete_checkpoints_are_clear_errors_or_fall_back(tmp_path, capsys):
    out = _finished_run(tmp_path)
    _drop(out / "checkpoint.pt", "optimizer")
    assert main(["train", *TINY, "--out", str(out), "--resume"]) == 0  # falls back to checkpoint.prev.pt
    printed = capsys.readouterr().out
    assert "lacks ['optimizer']" in printed and "all 1 epochs trained" in printed and "epoch 2/1" not in printed
    (out / "checkpoint.prev.pt").unlink()
    _drop(out / "checkpoint.pt", "optimizer")
    assert main(["train", *TINY, "--out", str(out), "--resume", "--epochs", "2"]) == 2
    assert "lacks ['optimizer'] (not a complete run checkpoint)" in capsys.readouterr().err
    out = _finished_run(tmp_path / "b")
    (out / "checkpoint.prev.pt").unlink()
    _drop(out / "checkpoint.pt", "stack.layers.0.weight_ih", inner="model")
    assert main(["train", *TINY, "--out", str(out), "--resume", "--epochs", "2"]) == 2
    assert "the checkpoint does not fit the model" in capsys.readouterr().err


def test_layers_beyond_the_memory_are_refused_with_the_estimate(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)
    need = memory.estimate_bytes(12, (1,) * 100000, 3, 20, 16)
    assert need > 2**30
    assert main(["train", *TINY, "--layers", "100000x1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"layers 100000x1 needs about {need / 2**30:.1f} GiB" in err and "1.0 GiB of memory available" in err
    assert not (tmp_path / "run").exists()
    assert main(["stabilize", "--layers", "100000x1"]) == 2
    assert "--layers 100000x1 needs about" in capsys.readouterr().err


def test_a_sweep_point_beyond_the_memory_is_refused_before_any_trial(tmp_path, monkeypatch, capsys):
    """Issue 26's leftover: such a point failed trial by trial; the sweep now checks every point first."""
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)
    out = tmp_path / "sweep"
    flags = [f for f in TINY if f not in ("--no-figures",)]
    assert main(["sweep", "--out", str(out), "--grid", "layers=1x8,100000x1", *flags]) == 2
    err = capsys.readouterr().err
    assert "--grid point layers=100000x1: layers 100000x1 needs about" in err and "1.0 GiB of memory available" in err
    assert not (out / "trials").exists()
    assert main(["sweep", "--out", str(tmp_path / "fits"), "--grid", "layers=1x8,1x9", *flags]) == 0


def test_ctrl_c_during_set_up_stops_at_once_and_leaves_no_run(tmp_path):
    out = tmp_path / "run"
    args = ["train", *TINY, "--layers", "3000x1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikestab", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
    )
    time.sleep(10)  # into the stabilisation of 3000 layers (built after about 6 s here; stabilised in minutes)
    assert proc.poll() is None
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert time.monotonic() - start < 4  # the model is put back in linear time (load_state_dict took 9 s here)
    assert not out.exists()  # the start had written nothing


def _one_class_task():
    """A task whose training split holds one class (as a data folder of one class gives)."""
    one = SpikeDataset(np.array([0, 1]), np.array([0, 1]), np.array([0, 1, 2]), np.array([0, 0]), 5, 4)
    two = SpikeDataset(np.array([0, 1]), np.array([0, 1]), np.array([0, 1, 2]), np.array([0, 1]), 5, 4)
    return Task("one-class", "classification", 4, 2, ["a", "b"], one, two, two, 5)


def test_a_start_that_fails_leaves_no_files(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = [*TINY, "--task-option", "samples_per_class=2", "--task-option", "n_classes=2"]
    assert main(["train", *tiny, "--out", str(out)]) == 2  # was: stabilised, wrote 3 files, failed at epoch end
    assert "the val split of task 'randman' is empty (0 samples)" in capsys.readouterr().err
    assert not out.exists()
    cfg = TrainConfig(layers=(4,), epochs=1, out=str(tmp_path / "one"), progress=False)
    with pytest.raises(ValueError, match="holds one class only"):
        Trainer(cfg, task=_one_class_task())
    assert not (tmp_path / "one").exists()


def test_resuming_a_finished_run_from_its_previous_checkpoint_counts_epochs(tmp_path, capsys):
    out = _finished_run(tmp_path)
    (out / "checkpoint.pt").write_bytes(b"damaged")
    assert main(["train", *TINY, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "all 1 epochs trained" in printed and "at epoch 2/1" not in printed
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 1
