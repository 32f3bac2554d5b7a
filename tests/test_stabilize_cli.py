"""``spikestab stabilize`` builds its network and its probe set with the builders ``spikestab train`` uses
(``models.build_model``, ``train.task.probe_set``), so both measure the recipe's regime on the same samples."""

import pytest
import torch

from spikestab.cli import main
from spikestab.data import load_task, make_loader
from spikestab.stability.cli import build
from spikestab.stability.regime import MIN_PROBE_SAMPLES
from spikestab.train.task import probe_set


@pytest.mark.parametrize("samples", [1, MIN_PROBE_SAMPLES - 1, -1])
def test_a_probe_too_small_to_measure_is_refused_before_any_data_loads(samples, capsys):
    """A probe of fewer than MIN_PROBE_SAMPLES cannot decide the regime (the shared builder gives None
    for it): asking for one is bad input, said before any work."""
    assert main(["stabilize", "--task", "randman", "--probe-samples", str(samples)]) == 2
    assert f"--probe-samples must be 0 (no probe) or >= {MIN_PROBE_SAMPLES}, got {samples}" in capsys.readouterr().err


def test_the_probe_is_the_first_samples_of_the_shuffled_training_set():
    """One batch of PROBE_SAMPLES from the loader of epoch 0 (what it was before the builders were shared),
    equal to the first samples of `spikestab train`'s own batches of another size."""
    args = type(
        "Args",
        (),
        dict(
            task="randman",
            data_dir=None,
            seed=3,
            preset="none",
            batch=8,
            layers="16",
            net="lif",
            reset="subtract",
            surrogate="fast-sigmoid",
            dampening=1.0,
        ),
    )()
    _, _, probe = build(args, probe_samples=96)
    task = load_task("randman", None, seed=3)
    x, y = next(iter(make_loader(task.train, 96, shuffle=True, seed=3)))
    assert torch.equal(probe[0], x) and torch.equal(probe[1], y)
    xs, ys = probe_set(task, 32, 3, samples=96)  # three batches of 32: the same samples
    assert torch.equal(xs, x) and torch.equal(ys, y)
