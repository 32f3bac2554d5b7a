"""``spikestab train --resume`` as users expect: the stored configuration (flags typed override it), a
finished run extended with more epochs, a fresh start said as such, Ctrl-C naming the checkpoint and the
command that resumes (exit 130), and a finished run's results equal to an uninterrupted run's."""

import json

import pytest
import torch

from spikestab.cli import main
from spikestab.files import read_jsonl
from spikestab.train import Trainer
from train_tiny import tiny_train

TINY = tiny_train("--lr", "5e-3", "--checkpoint-every", "2", "--no-figures")


def same_run(a, b):
    """Two run folders hold the same results and metrics (timings aside) and the same final weights."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    for key in ("val", "test", "best_epoch", "global_steps", "epochs_done"):
        assert ra[key] == rb[key], key
    strip = lambda recs: [{k: v for k, v in r.items() if k != "train_seconds"} for r in recs]  # noqa: E731
    assert strip(read_jsonl(a / "metrics.jsonl")) == strip(read_jsonl(b / "metrics.jsonl"))
    wa, wb = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def ctrl_c_at(monkeypatch, global_step: int) -> None:
    """Make the training step that starts at ``global_step`` raise KeyboardInterrupt (what Ctrl-C does)."""
    step = Trainer.train_step

    def interrupted(self, *args):
        if self.global_step == global_step:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", interrupted)


def test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes(tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "run"
    ctrl_c_at(monkeypatch, 3)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"the last checkpoint is {out / 'checkpoint.pt'} (step 2, 0 epochs done)" in err
    assert f"resume with: spikestab train --resume --out {out}" in err
    monkeypatch.undo()
    # the printed command alone resumes: every option comes from the run's config.json
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    same_run(out, reference)


def test_a_finished_run_is_extended_with_more_epochs(tmp_path, capsys, reference):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 0
    assert "extending the finished run" in capsys.readouterr().out
    same_run(out, reference)  # one epoch, then one more: the same as two in one go
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert main(["train", "--resume", "--out", str(out), "--epochs", "1"]) == 2  # fewer epochs than done
    assert "it has trained 2 epochs already (pass --epochs 2 or more)" in capsys.readouterr().err


def test_resume_flags_typed_override_but_a_result_field_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.1"]) == 2
    assert "different config (lr: saved 0.005 vs now 0.1)" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--threads", "1", "--no-progress"]) == 0  # non-result


@pytest.mark.parametrize("make", [False, True])
def test_resume_on_an_empty_or_missing_folder_starts_fresh(tmp_path, capsys, make):
    out = tmp_path / "run"
    if make:
        out.mkdir()
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "--resume"]) == 0
    assert f"no checkpoint in {out} yet, starting a fresh run" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 1


def test_ctrl_c_before_the_run_starts_says_to_run_the_command_again(tmp_path, capsys, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt  # during stabilisation: no config.json, no checkpoint yet

    monkeypatch.setattr(Trainer, "stabilize", interrupted)
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "no checkpoint had been written yet; nothing to resume yet: run the same command again" in err
