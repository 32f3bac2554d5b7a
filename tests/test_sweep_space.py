"""Sweep definitions: option names in both spellings, grid / space values, every point checked through
TrainConfig, and every kind of bad input a clear error (exit 2, the argument named) before any trial runs."""

import json

import pytest

from spikestab.cli import main
from spikestab.sweep import make_plan, parse_grid, parse_space, setting_slug
from spikestab.sweep.space import apply, canonical, grid_points, space_probes
from sweep_tiny import FIXED, cli_args


def test_names_values_and_points():
    assert canonical("init-rate") == canonical("init_rate") == canonical("--init-rate") == "init_rate"
    assert canonical("task-option.n_units") == canonical("task_options.n_units") == "task_options.n_units"
    grid = parse_grid(
        [
            "init-rate=0.05,0.1",
            "conditions=none;I,II;I,II,III,IV",
            "layers=16;16,16",
            "recurrent=true,false",
            "task_option.n_units=12,20",
        ]
    )
    assert grid == {
        "init_rate": [0.05, 0.1],
        "conditions": [None, "I,II", "I,II,III,IV"],
        "layers": ["16", "16,16"],
        "recurrent": [True, False],
        "task_options.n_units": [12, 20],
    }
    points = grid_points(grid)
    assert len(points) == 2 * 3 * 2 * 2 * 2 and points[0] == {k: v[0] for k, v in grid.items()}
    cfg = apply(FIXED, {"task_options.n_units": 12, "dampening": 0.5})
    assert cfg["task_options"]["n_units"] == 12 and cfg["dampening"] == 0.5 and FIXED["task_options"]["n_units"] == 20
    space = parse_space(["lr=1e-4:1e-2:log", "epochs=1:3", "surrogate=fast-sigmoid,exponential"])
    assert space["lr"] == {"low": 1e-4, "high": 1e-2, "log": True} and space["epochs"]["low"] == 1
    assert {json.dumps(p, sort_keys=True) for p in space_probes(space)} >= {
        json.dumps({"lr": 1e-2, "epochs": 1, "surrogate": "fast-sigmoid"}, sort_keys=True)
    }


def test_setting_slug_is_stable_readable_and_distinct():
    a = setting_slug({"dampening": 0.5, "seed": 1})
    assert a == setting_slug({"dampening": 0.5, "seed": 1}) and a.startswith("dampening=0.5_seed=1__")
    assert setting_slug({"dampening": 0.5, "seed": 1}) != setting_slug({"dampening": 0.50000001, "seed": 1})
    assert "/" not in setting_slug({"layers": "16/16", "conditions": "I,II"})


def test_plan_validates_every_point_and_names_the_objective():
    plan = make_plan(FIXED, parse_grid(["init-rate=0.05,0.1", "seed=0,1"]))
    assert plan.names == ["init_rate", "seed"] and plan.trials == 4 and plan.sampler == "grid"
    assert (plan.objective, plan.direction) == ("val_accuracy", "maximize")
    assert "init_rate" not in plan.fixed and "seed" not in plan.fixed and plan.fixed["lr"] == 1e-2
    search = make_plan(FIXED, space={"lr": (1e-3, 1e-1, "log")}, trials=5)
    assert search.sampler == "tpe" and search.trials == 5
    with pytest.raises(ValueError, match=r"--grid point init_rate=1\.5: init_rate must be in \(0, 1\)"):
        make_plan(FIXED, {"init_rate": [0.1, 1.5]})
    with pytest.raises(ValueError, match=r"--space point .*lr must be a finite number > 0"):
        make_plan(FIXED, space={"lr": (0, 0.1)}, trials=2)


@pytest.mark.parametrize(
    "sweep_args, message",
    [
        (["--grid", "colour=1,2"], "--grid 'colour=1,2': unknown option 'colour'"),
        (["--space", "colour=1:2", "--trials", "2"], "--space 'colour=1:2': unknown option 'colour'"),
        (["--grid", "out=a,b"], "'out' cannot be swept"),
        (["--grid", "dampening="], "--grid 'dampening=': no values"),
        (["--grid", "dampening=1,1"], "--grid dampening: a value is repeated"),
        ([], "give --grid NAME=V1,V2"),
        (["--grid", "dampening=-1,1"], "--grid point dampening=-1: dampening must be a finite number > 0"),
        (["--grid", "surrogate=fast-sigmoid,relu"], "--grid point surrogate=relu: surrogate must be one of"),
        (["--grid", "seed=0,x"], "--grid seed: seed takes int values, got 'x'"),
        (["--grid", "task-option.colour=1,2"], "--grid point colour=1: unknown option(s) ['colour']"),
        (["--grid", "seed=0,1", "--space", "lr=0.001:0.01", "--trials", "2"], "not both"),
        (["--space", "lr=0.01:0.001", "--trials", "2"], "--space lr: the range needs finite LOW < HIGH"),
        (["--space", "surrogate=1:2", "--trials", "2"], "surrogate is not numeric"),
        (["--space", "lr=0.001:0.01"], "--trials must be an integer >= 1"),
        (["--space", "lr=0.001:0.01", "--trials", "2", "--sampler", "grid"], "--sampler must be one of"),
        (["--grid", "seed=0,1", "--sampler", "tpe"], "--sampler tpe searches a --space"),
        (["--grid", "seed=0,1", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
        (["--grid", "seed=0,1", "--prune", "mean"], "--prune takes median"),
        (["--grid", "seed=0,1", "--heartbeat", "0"], "--heartbeat must be an integer >= 1"),
        (
            ["--grid", "seed=0,1", "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none"],
            "--storage 'postgresql+psycopg2://nobody@127.0.0.1:1/none' cannot be opened",
        ),
        (
            ["--grid", "seed=0,1", "--storage", "sqlite:////nonexistent/folder/x.db"],
            "folder '/nonexistent/folder' does not exist",
        ),
        (["--grid", "seed=0,1", "--storage", "nosuchdb://x"], "--storage 'nosuchdb://x' cannot be opened"),
    ],
)
def test_bad_input_is_refused_before_any_trial(tmp_path, capsys, sweep_args, message):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *sweep_args, *cli_args()]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def test_report_errors(tmp_path, capsys):
    assert main(["sweep-report", str(tmp_path / "nothing")]) == 2
    assert "pass --storage URL" in capsys.readouterr().err


def test_continuing_a_sweep_started_before_a_training_option_existed():
    # regression: a sweep.json written before `on_nonfinite` existed was refused ("saved None vs now 'stop'")
    from spikestab.sweep.study import compare_spec

    mine = {"grid": {"seed": [0, 1]}, "fixed": {"task": "randman", "lr": 0.01, "on_nonfinite": "stop"}}
    saved = {"grid": {"seed": [0, 1]}, "fixed": {"task": "randman", "lr": 0.01}}
    compare_spec(saved, mine, "sweep.json")  # the saved sweep ran with the default: no difference
    with pytest.raises(ValueError, match="on_nonfinite: saved 'stop' vs now 'skip'"):
        compare_spec(
            {**saved, "fixed": {**saved["fixed"], "on_nonfinite": "stop"}},
            {**mine, "fixed": {**mine["fixed"], "on_nonfinite": "skip"}},
            "sweep.json",
        )
    with pytest.raises(ValueError, match="lr"):
        compare_spec({**saved, "fixed": {**saved["fixed"], "lr": 0.02}}, mine, "sweep.json")
