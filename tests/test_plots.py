"""Figures are written as real PNG files; bad input is refused."""

import pytest
import torch

from spikestab import plots


def _records():
    recs = []
    for e in range(2):
        for i in range(3):
            recs.append(
                {
                    "kind": "step",
                    "epoch": e,
                    "step": e * 3 + i + 1,
                    "rates": [0.2 - 0.01 * i, 0.1],
                    "sparsity_weight": min(1.0, (e * 3 + i) / 4),
                }
            )
        recs.append(
            {
                "kind": "epoch",
                "epoch": e,
                "train_loss": 1.0 / (e + 1),
                "train_task_loss": 0.9 / (e + 1),
                "val_loss": 1.1 / (e + 1),
                "train_accuracy": 0.5 + 0.1 * e,
                "val_accuracy": 0.4 + 0.1 * e,
            }
        )
    return recs


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_figures(tmp_path):
    paths = [
        plots.learning_curves(_records(), tmp_path / "lc.png"),
        plots.firing_rates(_records(), tmp_path / "fr.png"),
        plots.spike_raster((torch.rand(20, 5) < 0.2).float(), [(torch.rand(20, 8) < 0.3).float()], tmp_path / "r.png"),
        plots.sg_shapes(tmp_path / "sg.png"),
    ]
    assert all(_is_png(p) and p.stat().st_size > 5000 for p in paths)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_epoch_axis_is_fractional():
    steps = [r for r in _records() if r["kind"] == "step"]
    assert plots._epoch_axis(steps).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no epoch record"):
        plots.learning_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plots.spike_raster(None, [torch.zeros(3, 4, 5)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="missing or empty"):
        plots.run_figures(tmp_path)
