"""``spikestab train`` end to end on a tiny generated task, --config files, and clear errors (exit 2)."""

import json

import pytest
import torch

from spikestab.cli import main
from spikestab.files import read_jsonl
from train_tiny import tiny_train

TINY = tiny_train("--epochs", "2", "--lr", "5e-3", "--sparsity", "l1_rate:0.05:linear")


def test_train_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["layers"] == [16, 16] and res["config"]["task_options"]["n_units"] == 12
    assert res["epochs_done"] == 2
    assert f"test accuracy {res['test']['accuracy']:.4f}" in printed  # the console says what results.json holds
    for name in ("learning_curves.png", "firing_rates.png", "raster.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert [r["kind"] for r in read_jsonl(out / "metrics.jsonl")][-1] == "test"


def test_config_file_and_flag_override(tmp_path):
    cfg = {
        "task": "randman",
        "task_options": {"n_classes": 3, "n_units": 12, "n_steps": 20, "samples_per_class": 30},
        "layers": [16],
        "epochs": 1,
        "batch_size": 16,
        "lr": 0.01,
        "progress": False,
    }
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(tmp_path / "c.json"), "--lr", "0.002", "--out", str(out), "--no-figures"]) == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["layers"] == [16] and saved["epochs"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "cifar"], "task must be one of"),
        (["--task", "randman", "--surrogate", "relu"], "surrogate must be one of"),
        (["--task", "randman", "--layers", "2x128x3"], "layers must look like"),
        (["--task", "randman", "--sparsity", "l1_rate"], "sparsity must look like"),
        (["--task", "shd", "--data-dir", "/nonexistent/shd"], "put shd_train.h5 and shd_test.h5"),
        (["--task", "randman", "--task-option", "colour=3"], "unknown option"),
        (["--config", "/nonexistent.json"], "does not exist"),
        (["--task", "randman", "--time-checkpoint", "-2"], "time_checkpoint must be an integer >= 0"),
        (["--task", "randman", "--regime", "medium"], "regime must be one of"),
        (["--task", "randman", "--regime", "sparse", "--conditions", "III"], "applies to the recommended recipe"),
    ],
)
def test_train_cli_errors(tmp_path, capsys, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_with_other_config_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--no-figures", "--epochs", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", *TINY, "--out", str(out), "--no-figures", "--epochs", "1", "--lr", "0.1", "--resume"]) == 2
    assert "different config" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", str(out), "--no-figures", "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_time_checkpoint_trains_like_the_plain_layers(tmp_path):
    """--time-checkpoint K gives every spiking layer checkpointed segments of K steps; training follows
    the plain run (same forward, gradients equal up to summation order)."""
    plain, ckpt = tmp_path / "plain", tmp_path / "ckpt"
    # a dense start (the recipe would start this timing-coded Randman sparse): the network must fire
    dense = [*TINY, "--epochs", "1", "--no-figures", "--regime", "dense"]
    assert main(["train", *dense, "--out", str(plain)]) == 0
    assert main(["train", *dense, "--time-checkpoint", "7", "--out", str(ckpt)]) == 0
    a, b = (json.loads((run / "results.json").read_text()) for run in (plain, ckpt))
    assert b["config"]["time_checkpoint"] == 7
    assert min(a["test"]["rates"]) > 0.1  # a network that fires: the gradients through the spikes matter
    assert abs(a["test"]["loss"] - b["test"]["loss"]) < 1e-4
    # every step's loss and gradient norm, and the trained weights, follow the plain run
    steps = [[r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "step"] for run in (plain, ckpt)]
    assert len(steps[0]) == len(steps[1]) > 0
    for r, q in zip(*steps):
        assert abs(r["loss"] - q["loss"]) < 1e-4 and abs(r["grad_norm"] - q["grad_norm"]) <= 1e-3 * r["grad_norm"]
    wa, wb = (torch.load(run / "checkpoint.pt", weights_only=True)["model"] for run in (plain, ckpt))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-4)


def test_train_cli_beats_chance_on_a_separable_task(tmp_path, capsys, monkeypatch):
    """The command end to end (flags, config, training, results) on test_train.separable_task, put in
    place of the task loader: chance 1/3, the bar chance + CHANCE_MARGIN."""
    import spikestab.data
    from test_train import CHANCE_MARGIN, separable_task

    monkeypatch.setattr(spikestab.data, "load_task", lambda *args, **kwargs: separable_task())
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--task",
                "randman",
                "--layers",
                "2x16",
                "--epochs",
                "10",
                "--batch-size",
                "16",
                "--lr",
                "5e-3",
                "--dropout",
                "0.2",
                "--seed",
                "3",
                "--no-progress",
                "--threads",
                "1",
                "--no-figures",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["accuracy"] >= 1 / 3 + CHANCE_MARGIN and res["val"]["accuracy"] >= 1 / 3 + CHANCE_MARGIN
    assert f"test accuracy {res['test']['accuracy']:.4f}" in capsys.readouterr().out
