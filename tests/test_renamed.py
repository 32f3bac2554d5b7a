"""Names renamed to one vocabulary (issue 23): the old flags, keys and backend name still work for one
release, with a note naming the new one, and run folders, config files and sweep databases written under
the old names are read (``train.config.migrate``) on ``--resume``, ``--config`` and ``sweep-report``."""

import json
import warnings

import optuna
import pytest
import torch

from spikestab.cli import build_parser, main
from spikestab.models import SNNConfig, build_model
from spikestab.sweep.report import collect
from spikestab.sweep.space import apply, parse_grid, parse_space
from spikestab.sweep.study import SPEC_ATTR, make_plan, prepare_study
from spikestab.sweep.worker import suggest
from spikestab.train.config import RENAMED, TrainConfig, migrate
from spikestab.train.flags import config_from_args
from sweep_tiny import FIXED

TINY = [
    "--task",
    "randman",
    *("--task-option", "n_classes=3", "--task-option", "n_units=12"),
    *("--task-option", "n_steps=20", "--task-option", "samples_per_class=30"),
    *("--layers", "16", "--batch-size", "16", "--no-progress", "--threads", "1", "--no-figures"),
]


def _train_config(argv: list[str]) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_old_train_flags_set_the_new_fields_and_say_so(capsys):
    with pytest.warns(DeprecationWarning):
        cfg = _train_config(["--sg", "exponential", "--stabilize", "I,II", "--backend", "event"])
    assert (cfg.surrogate, cfg.conditions, cfg.backend) == ("exponential", ("I", "II"), "native")
    err = capsys.readouterr().err
    for old, new in (("--sg", "--surrogate"), ("--stabilize", "--conditions"), ("--backend event", "--backend native")):
        assert f"{old} is deprecated" in err and f"use {new}" in err, err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names: no note
        assert _train_config(["--surrogate", "exponential", "--conditions", "none"]).conditions == ()
    assert "deprecated" not in capsys.readouterr().err
    assert "--sg" not in " ".join(build_parser().format_help().split())  # old flags are not advertised


def test_old_stabilize_mode_flag(capsys):
    with pytest.warns(DeprecationWarning):
        rc = main(["stabilize", "--layers", "1x8", "--steps", "20", "--mode", "paper", "--conditions", "III"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "--mode is deprecated" in captured.err and "use --stability-mode" in captured.err
    assert "stability report (paper mode)" in captured.out


def test_old_backend_name_runs_the_native_kernel():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="backend 'event' is deprecated.*use 'native'"):
        model = build_model(SNNConfig(6, 3, (8,), dropout=0.0, backend="event"), "classification")
    assert model.stack.layers[0].backend == "native"
    x = (torch.rand(10, 2, 6, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    torch.manual_seed(0)
    same = build_model(SNNConfig(6, 3, (8,), dropout=0.0, backend="native"), "classification")
    torch.testing.assert_close(model.simulate(x).logits, same.simulate(x).logits, rtol=0, atol=0)


def test_migrate_reads_old_keys_once_and_refuses_both_spellings():
    old = {"sg": "exponential", "stabilize": ["D", "G"], "backend": "event", "lr": 0.1}
    assert migrate(old) == {"surrogate": "exponential", "conditions": ["D", "G"], "backend": "native", "lr": 0.1}
    assert migrate(migrate(old)) == migrate(old)
    with pytest.raises(ValueError, match="both 'sg' and 'surrogate'"):
        migrate({"sg": "exponential", "surrogate": "fast-sigmoid"})
    assert set(RENAMED.values()) <= set(TrainConfig.__dataclass_fields__)


def _rewrite_with_old_names(run) -> None:
    """Turn a run folder into one written before the renaming: config.json and the checkpoint's config."""
    old = {v: k for k, v in RENAMED.items()}
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({old.get(k, k): v for k, v in cfg.items()}))
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    ck["config"] = {old.get(k, k): v for k, v in ck["config"].items()}
    torch.save(ck, run / "checkpoint.pt")


def test_a_run_folder_with_the_old_keys_resumes(tmp_path):
    run = tmp_path / "run"
    argv = [*TINY, "--surrogate", "exponential", "--conditions", "none"]
    assert main(["train", *argv, "--epochs", "1", "--out", str(run)]) == 0
    _rewrite_with_old_names(run)
    assert "sg" in json.loads((run / "config.json").read_text())
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_done"] == 2 and results["config"]["surrogate"] == "exponential"
    assert results["config"]["conditions"] == [] and "sg" not in results["config"]
    # a result field that differs is still refused, under its new name
    _rewrite_with_old_names(run)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--surrogate", "fast-sigmoid"]) == 2


def test_a_config_file_with_the_old_keys(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"task": "randman", "sg": "exponential", "stabilize": "none"}))
    cfg = _train_config(["--config", str(path)])
    assert cfg.surrogate == "exponential" and cfg.conditions == ()


def test_old_names_in_a_sweep_grid_space_and_fixed_options(capsys):
    with pytest.warns(DeprecationWarning):
        grid = parse_grid(["sg=fast-sigmoid,exponential", "stabilize=none;I,II"])
    assert grid == {"surrogate": ["fast-sigmoid", "exponential"], "conditions": [None, "I,II"]}
    with pytest.warns(DeprecationWarning):
        assert list(parse_space(["sg=fast-sigmoid,exponential"])) == ["surrogate"]
    assert "sg is deprecated" in capsys.readouterr().err
    old_fixed = {k: v for k, v in FIXED.items() if k != "conditions"} | {"stabilize": "none"}
    with pytest.warns(DeprecationWarning):
        plan = make_plan(old_fixed, {"sg": ["fast-sigmoid", "exponential"]})
    assert plan.names == ["surrogate"] and "stabilize" not in plan.fixed
    assert TrainConfig.from_dict({**plan.fixed, "surrogate": "exponential"}).conditions == ()


def _old_study(tmp_path):
    """A study as the sweep wrote it before the renaming: spec and queued trial params under the old names,
    one trial complete."""
    plan = make_plan(FIXED, {"surrogate": ["fast-sigmoid", "exponential"]})
    old = {v: k for k, v in RENAMED.items()}
    spec = plan.spec()
    spec["fixed"] = {old.get(k, k): v for k, v in spec["fixed"].items()}
    spec["grid"] = {"sg": spec["grid"]["surrogate"]}
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(storage=url, study_name="old", direction="maximize")
    study.set_user_attr(SPEC_ATTR, spec)
    for shape in spec["grid"]["sg"]:
        study.enqueue_trial({"sg": shape}, user_attrs={"setting": f"sg={shape}"})
    study.set_user_attr("spikestab_queued", 2)
    done = study.ask()
    study.tell(done, 0.75)
    return plan, url, study


def test_an_old_sweep_database_is_reported_and_continued(tmp_path):
    plan, url, study = _old_study(tmp_path)
    data = collect(study)
    assert [s["params"] for s in data["settings"]] == [{"surrogate": "fast-sigmoid"}, {"surrogate": "exponential"}]
    assert data["best"]["params"] == {"surrogate": "fast-sigmoid"} and data["spec"]["grid"] == plan.grid
    # continuing it with the new names: the definitions match, nothing is queued again
    joined = prepare_study(optuna.storages.RDBStorage(url), url, "old", plan, log=lambda s: None, wait=0)
    assert len(joined.get_trials()) == 2
    # the queued trial keeps its old name, so its run directory is the one the old sweep named
    trial = joined.ask()
    params = suggest(trial, plan, {"sg": "exponential"})
    assert params == {"sg": "exponential"}
    assert TrainConfig.from_dict({**apply(plan.fixed, params), "out": str(tmp_path)}).surrogate == "exponential"
