"""What the user set is never silently overwritten (issue 26 item 2): ``TrainConfig.user_set`` is known from
the flags typed, a --config file, sweep values and Python keywords; under conditions auto the recipe keeps a
set threshold / dampening and chooses only the rest; a combination that cannot be honoured is refused before
any work; sweep-report names ties as ties; the README's first sweep example gives a result per grid point."""

import json
import re
from pathlib import Path

import pytest
import torch

from spikestab.cli import build_parser, main
from spikestab.models import SNNClassifier, SNNConfig
from spikestab.stability import stabilize
from spikestab.stability.report import rate_warning
from spikestab.sweep.report import _best_line, tie
from spikestab.sweep.space import check_points
from spikestab.train.config import TrainConfig
from spikestab.train.flags import config_from_args
from sweep_tiny import FIXED
from train_tiny import tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = tiny_train("--epochs", "1", "--no-figures")


def _config(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_user_set_is_known_from_flags_files_python_and_resume(tmp_path):
    assert _config([]).user_set == ()
    assert _config(["--threshold", "1.0"]).user_set == ("threshold",)  # the default value, typed: set
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"dampening": 2.0}))
    assert _config(["--config", str(path)]).user_set == ("dampening",)  # not every field the file implies
    assert TrainConfig(threshold=1.0).user_set == ("threshold",)
    cfg = TrainConfig.from_dict({"task": "randman", "dampening": 0.5})
    assert TrainConfig.from_dict(cfg.to_dict()).user_set == ("dampening", "task")  # config.json keeps it
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "out": str(run)}))
    resumed = _config(["--resume", "--out", str(run), "--threshold", "0.7"])
    assert {"dampening", "task", "threshold"} <= set(resumed.user_set)
    legacy = {k: v for k, v in cfg.to_dict().items() if k != "user_set"}  # written before user_set existed
    (run / "config.json").write_text(json.dumps({**legacy, "out": str(run)}))
    assert _config(["--resume", "--out", str(run)]).kept() == {"dampening": 0.5}  # a non-default value was set


def test_recipe_keeps_what_was_set_and_chooses_the_rest(tmp_path):
    for flags, kept, applied in (
        (["--threshold", "0.37"], {"threshold": 0.37}, ["G"]),
        (["--dampening", "2.5"], {"dampening": 2.5}, ["D"]),
        (["--threshold", "0.37", "--dampening", "2.5"], {"threshold": 0.37, "dampening": 2.5}, None),
    ):
        out = tmp_path / "_".join(flags)
        assert main(["train", *TINY, *flags, "--out", str(out)]) == 0
        stability = json.loads((out / "stability.json").read_text())
        assert stability["kept"] == kept
        assert (stability["report"]["conditions"] if applied else None) == applied
        state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
        for name, value in kept.items():
            held = [v for k, v in state.items() if k.endswith(f".{name}")]
            assert held and all(torch.allclose(v, torch.full_like(v, value)) for v in held), name


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--conditions", "D,G", "--threshold", "0.5"], "condition D chooses the threshold"),
        (["--conditions", "III", "--dampening", "2"], "condition III chooses the dampening"),
        (["--conditions", "IV", "--sharpness", "2"], "condition IV chooses the sharpness"),
        (["--conditions", ""], "--conditions is empty: pass --conditions none"),
        (["--conditions", "none", "--stability-mode", "paper"], "stability_mode 'paper' applies"),
        (["--conditions", "D", "--stability-mode", "paper"], "stability_mode 'paper' applies"),
        (["--threshold", "1", "--dampening", "1", "--regime", "sparse"], "regime 'sparse' sets the targets"),
        (["--net", "cuba"], "net 'cuba' takes conditions 'none'"),
    ],
)
def test_combinations_that_cannot_be_honoured_are_refused_before_any_work(tmp_path, capsys, flags, says):
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_sweep_points_that_would_overwrite_are_refused_before_any_trial():
    with pytest.raises(ValueError, match="--grid point dampening=0.5: condition III chooses the dampening"):
        check_points({**FIXED, "conditions": "III"}, [{"dampening": 0.5}, {"dampening": 2.0}], "--grid")
    auto = check_points({**FIXED, "conditions": "auto"}, [{"dampening": 0.5}, {"threshold": 2.0}], "--grid")
    assert [c.recipe_conditions() for c in auto] == [("D",), ("G",)]


def test_stabilize_cli_keeps_a_given_dampening_and_refuses_what_it_cannot(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["stabilize", "--layers", "1x16", "--steps", "40", "--dampening", "3", "--json", str(out)]) == 0
    assert "kept as you set it: dampening=3.0" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["conditions"] == ["D"]
    assert main(["stabilize", "--layers", "1x16", "--conditions", "III", "--dampening", "3"]) == 2
    assert "condition III chooses the dampening" in capsys.readouterr().err
    assert main(["stabilize", "--layers", "1x16", "--stability-mode", "paper"]) == 2
    assert "mode 'paper' applies to the paper's conditions" in capsys.readouterr().err


def test_stabilize_takes_the_regime_for_one_condition_of_the_recipe():
    model = SNNClassifier(SNNConfig(30, 3, hidden_sizes=(16,), dropout=0.0))
    x = (torch.rand(40, 8, 30) < 0.2).float()
    before = model.stack.layers[0].threshold.clone()
    report = stabilize(model, x, conditions=("G",), regime="sparse")
    assert report.regime["regime"] == "sparse" and torch.equal(model.stack.layers[0].threshold, before)
    probe = ((torch.rand(40, 64, 30) < 0.2).float(), torch.arange(64) % 3)
    with pytest.raises(ValueError, match="probe measures the recipe's regime by condition D"):
        stabilize(model, x, conditions=("G",), probe=probe)
    with pytest.raises(ValueError, match="mode 'paper' applies"):
        stabilize(model, x, mode="paper")


def test_silent_layer_advice_follows_who_set_the_threshold():
    assert "--conditions auto" in rate_warning(0, 0.0)
    assert "--conditions auto" not in rate_warning(0, 0.0, "D") and "condition D" in rate_warning(0, 0.0, "D")
    assert "--threshold" in rate_warning(0, 0.0, "user") and "lower" in rate_warning(0, 0.0, "user")
    assert "raise" in rate_warning(0, 1.0, "user")


def _setting(label, values, seeds=None):
    seeds = seeds or [None] * len(values)
    trials = [{"seed": s, "value": v, "trial": i} for i, (s, v) in enumerate(zip(seeds, values))]
    n = len(values)
    return {"label": label, "trials": trials, "n": n, "mean": sum(values) / n, "text": f"{sum(values) / n:.4f}"}


def test_sweep_report_names_ties_as_ties():
    a, b = _setting("dampening=0.1", [0.5]), _setting("dampening=1", [0.5])
    assert tie(a, b) == {"label": "dampening=1", "why": "identical results"}
    line = _best_line({"best": a, "ties": [tie(a, b)], "settings": [a, b]}, "accuracy")
    assert line.startswith("**No best:** all 2 settings gave identical results")
    seeds = [0, 1, 2]
    c, d = _setting("x=1", [0.60, 0.70, 0.65], seeds), _setting("x=2", [0.61, 0.66, 0.64], seeds)
    assert tie(c, d)["why"].startswith("not separated (paired t, p = ")
    e = _setting("x=3", [0.30, 0.31, 0.32], seeds)
    assert tie(c, e) is None
    line = _best_line({"best": c, "ties": [tie(c, d)], "settings": [c, d, e]}, "accuracy")
    assert line.startswith("**Best by mean, tied:** x=1") and "tied with x=2 (not separated" in line
    assert _best_line({"best": c, "ties": [], "settings": [c, e]}, "accuracy").startswith("**Best:** x=1")


def _readme_sweep_grids() -> list[str]:
    """The --grid options of the README's first `spikestab sweep` example."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    command = re.search(r"^spikestab sweep .*?(?<!\\)$", text, re.M | re.S)
    assert command is not None
    return re.findall(r"--grid (\S+)", command.group(0))


def test_readme_first_sweep_example_gives_a_result_per_grid_point(tmp_path):
    grids = _readme_sweep_grids()
    swept = [g for g in grids if not g.startswith("seed=")]
    assert swept, grids
    fixed = [a for a in TINY if a not in ("--no-figures",)]
    out = tmp_path / "sweep"
    grid_flags = [x for g in swept for x in ("--grid", g)] + ["--grid", "seed=0"]
    assert main(["sweep", "--out", str(out), *grid_flags, *fixed]) == 0
    losses = [json.loads(p.read_text())["val"]["loss"] for p in sorted(out.glob("trials/*/results.json"))]
    expected = 1
    for g in swept:
        expected *= len(g.split("=", 1)[1].split(","))
    assert len(losses) == expected and len(set(losses)) == expected, losses


def test_empty_conditions_in_a_config_file_is_refused_as_on_the_command_line(tmp_path, capsys):
    """Issue 26's leftover: `--conditions ""` was refused, the same empty text from a --config file silently
    meant 'none'. A run folder's config.json (conditions [] for none) still loads."""
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"conditions": " "}))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(empty), "--out", str(out)]) == 2
    assert "conditions is empty: write \"none\"" in capsys.readouterr().err and not out.exists()
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"conditions": "none"}))
    assert main(["train", *TINY, "--config", str(none), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["conditions"] == []
    assert TrainConfig.from_json(out / "config.json", run=True).conditions == ()
    assert main(["train", *TINY, "--config", str(out / "config.json"), "--out", str(tmp_path / "again")]) == 0
