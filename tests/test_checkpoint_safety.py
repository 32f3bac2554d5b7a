"""A run folder's checkpoint files are read with ``torch.load(weights_only=True)``: a crafted
checkpoint.pt or best.pt cannot run code on ``--resume``, on testing or in a sweep worker."""

import os
import pickle

import pytest
import torch

from spikestab.train.checkpoint import load_checkpoint


class RunsCode:
    """A pickle payload that runs a shell command when unpickled without restrictions."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "payload": RunsCode(str(marker))}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_real_checkpoint_still_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    content = {
        "model": {"w": torch.ones(3)},
        "rng": torch.get_rng_state(),
        "epoch": 2,
        "acc": {"loss": [1.0]},
        "loss_growth": None,
        "config": {"lr": 1e-3, "layers": "2x64"},
    }
    torch.save(content, path)
    back = load_checkpoint(path)
    assert back["epoch"] == 2 and torch.equal(back["model"]["w"], torch.ones(3))
