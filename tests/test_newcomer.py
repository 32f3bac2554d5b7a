"""What a newcomer meets first: --help of every command (what it does, every option explained, defaults
shown), --version, `spikestab tasks`, the run folder's inference example (docs/run_folder.md, executed
here), `stabilize --save`, and the public spike encoders of spikestab.encoding."""

import argparse
import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from spikestab import SNNClassifier, SNNConfig
from spikestab.cli import build_parser, main
from spikestab.data import task_options
from spikestab.data.tasks import TASKS
from spikestab.models import load_model_state

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _commands():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_says_what_it_does_and_explains_every_option():
    commands = _commands()
    assert {"train", "stabilize", "demo", "tasks", "make-shd", "sweep"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 30, name
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
                if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                    assert "default" in action.help or "(default:" in text, (name, action.dest)
    train = " ".join(commands["train"].format_help().split())
    for shown in (
        "--lr LR learning rate (default: 0.001)",
        "(default: fast-sigmoid)",
        "(default: 128,128)",
        "(default: runs/train)",
    ):
        assert shown in train
    stabilize = " ".join(commands["stabilize"].format_help().split())
    assert "neuron model (default: lif)" in stabilize and "--save FILE" in stabilize


def test_top_help_and_version(capsys):
    with pytest.raises(SystemExit) as ok:
        main(["--help"])
    out = capsys.readouterr().out
    assert ok.value.code == 0 and "stability conditions" in out and "spikestab demo" in out
    assert re.search(r"tasks\s+list the training tasks", out)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"spikestab {importlib.metadata.version('spikestab')}"


def test_tasks_listing(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in TASKS:
        assert f"\n{name}\n" in f"\n{out}"
    assert "samples_per_class=1000" in out and "dt=0.004" in out and "make-shd" in out
    assert main(["tasks", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == set(TASKS)
    for name, entry in listing.items():
        assert entry["options"] == json.loads(json.dumps(task_options(name), default=str)) and entry["data"]


def test_the_run_folder_example_loads_best_pt_for_inference(tmp_path, capsys):
    from test_train_cli import TINY

    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--no-figures", "--out", str(run)]) == 0
    doc = (DOCS / "run_folder.md").read_text()
    for name in (
        "config.json",
        "stability.json",
        "checkpoint.pt",
        "checkpoint.prev.pt",
        "best.pt",
        "metrics.jsonl",
        "results.json",
    ):
        assert f"`{name}`" in doc and (run / name).exists(), name  # every file documented is there, and back
    documented = set(re.findall(r"^\| `([\w.]+)/?` \|", doc, re.M))
    assert documented | {"figures"} >= {p.name for p in run.iterdir()}
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    capsys.readouterr()
    exec(compile(code, "docs/run_folder.md", "exec"), {"RUN": str(run)})
    printed = capsys.readouterr().out
    mine = float(re.search(r"test accuracy (\S+)", printed).group(1))
    assert mine == pytest.approx(json.loads((run / "results.json").read_text())["test"]["accuracy"], abs=1e-4)


def test_stabilize_save_keeps_the_stabilised_model(tmp_path, capsys):
    path = tmp_path / "stab.pt"
    args = [
        "stabilize",
        "--layers",
        "2x16",
        "--inputs",
        "20",
        "--steps",
        "60",
        "--batch",
        "8",
        "--conditions",
        "D,G",
        "--seed",
        "2",
    ]
    assert main([*args, "--save", str(path)]) == 0
    out = capsys.readouterr().out
    assert "spikestab train --task TASK --net lif --layers 2x16 --conditions D,G" in out
    ck = torch.load(path, weights_only=True)
    model = SNNClassifier(SNNConfig(**ck["config"]))
    load_model_state(model, ck["state_dict"])
    model.eval()
    # the same random batch as the command's (seeded), through the loaded model: the rates it reported
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(60, 8, 20, generator=gen) < 0.1).float()
    with torch.no_grad():
        rates = [z.mean().item() for z in model.run(x)[1]]
    reported = [layer["measurements"]["firing_rate"] for layer in ck["report"]["layers"]]
    assert rates == pytest.approx(reported, abs=1e-6)
    assert all(0.3 < r < 0.7 for r in rates)  # D's target of 1/2, so the thresholds were saved, not defaults
    assert main([*args, "--save", str(tmp_path / "missing" / "x.pt")]) == 2
    assert "--save must name a file in an existing folder" in capsys.readouterr().err


def test_encoders_are_public():
    from spikestab.data import mnist
    from spikestab.encoding import latency_encode, latency_raster, rate_encode

    assert mnist.latency_encode is latency_encode  # one implementation, still importable where it was
    x = np.array([[1.0, 0.5, 0.1, 0.0]])
    steps = latency_encode(x)
    # by hand: x' = 50x; T = round(500 ln(x' / (x' - 0.2)))
    assert steps.tolist() == [
        [round(500 * math.log(50 / 49.8)), round(500 * math.log(25 / 24.8)), round(500 * math.log(5 / 4.8)), -1]
    ]
    raster = latency_raster(steps)
    assert raster.shape == (100, 1, 4) and raster.sum().item() == 3
    assert raster[steps[0, 0], 0, 0] == 1 and raster[:, 0, 3].sum() == 0
    p = torch.tensor([0.0, 0.25, 1.0])
    spikes = rate_encode(p, 4000, max_rate=0.8, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (4000, 3) and spikes.dtype == torch.float32
    # Bernoulli(0.8 p): the mean within 4 binomial standard deviations
    for rate, expected in zip(spikes.mean(0).tolist(), (0.8 * p).tolist()):
        assert abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / 4000) + 1e-12
    again = rate_encode(p, 4000, max_rate=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(spikes, again)
    for bad, match in (
        (lambda: rate_encode(torch.tensor([1.5]), 3), "values in"),
        (lambda: rate_encode(p, 0), "n_steps"),
        (lambda: rate_encode(p, 3, max_rate=0), "max_rate"),
        (lambda: latency_raster(np.array([[100]])), "steps must lie"),
    ):
        with pytest.raises(ValueError, match=match):
            bad()
