"""Training at its boundaries (issue 15): non-finite losses, gradients and parameters stop the run (or skip
the step) with the step and layer named, the last good checkpoint kept and strict JSON written; a climbing
loss warns; console and results agree on the best epoch; ``--out`` naming a file fails before data loads."""

import json
import math

import pytest
import torch

from spikestab.cli import main
from spikestab.files import atomic_write_json, read_jsonl
from spikestab.train import NonFiniteError, TrainConfig, Trainer
from spikestab.train.checkpoint import load_checkpoint
from spikestab.train.metrics import MetricsLog
from test_train import cfg_for, tiny_task
from test_train_cli import TINY


def strict_json(path):
    """The file parsed as strict JSON: NaN / Infinity literals are an error."""

    def refuse(name):
        raise AssertionError(f"{path} holds the non-JSON literal {name}")

    return json.loads(open(path).read(), parse_constant=refuse)


def poison_grad(param, steps, trainer_ref):
    """Make ``param``'s gradient NaN at the given global steps (1-based, as in metrics.jsonl)."""

    def hook(grad):
        if trainer_ref[0].global_step + 1 in steps:
            return grad * float("nan")
        return grad

    param.register_hook(hook)


def _finite_weights(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def test_strict_json_writers_turn_nan_into_null(tmp_path):
    atomic_write_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}}, tmp_path / "r.json")
    assert strict_json(tmp_path / "r.json") == {"a": None, "b": [1.0, None], "c": {"d": None}}
    log = MetricsLog(tmp_path / "m.jsonl")
    log.write({"loss": float("nan")})
    log.truncate(1)
    assert [json.loads(line, parse_constant=lambda c: 1 / 0) for line in open(tmp_path / "m.jsonl")] == [{"loss": None}]


def test_overflowing_lr_stops_at_the_first_nonfinite_loss_and_keeps_the_last_good_checkpoint(tmp_path):
    """lr 3e37: the first update makes the weights ~3e37, the second step's forward overflows."""
    cfg = cfg_for(tmp_path, lr=3e37, checkpoint_every=1)
    logs = []
    with pytest.raises(NonFiniteError, match=r"step 2 \(epoch 1/3, batch 2/6\).*loss is (inf|nan)") as err:
        Trainer(cfg, tiny_task(), log=logs.append).fit()
    msg = str(err.value)
    assert "stack.layers.0" in msg  # the first layer whose values went non-finite (its membrane voltage)
    assert "checkpoint.pt" in msg and "step 1" in msg
    out = tmp_path / "run"
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["global_step"] == 1 and _finite_weights(ck["model"])  # the last good checkpoint, not overwritten
    assert not (out / "best.pt").exists()
    res = strict_json(out / "results.json")
    assert res["stopped_by_nonfinite"]["step"] == 2 and res["stopped_by_nonfinite"]["layer"] == "stack.layers.0"
    assert res["best_epoch"] == -1 and res["test"] is None  # nothing tested on non-finite weights
    recs = read_jsonl(out / "metrics.jsonl")
    for line in open(out / "metrics.jsonl"):
        json.loads(line, parse_constant=lambda c: 1 / 0)
    assert recs[-1]["kind"] == "nonfinite" and recs[-1]["step"] == 2
    assert [r["step"] for r in recs if r["kind"] == "step"] == [1]  # the bad step's record is the nonfinite one


def test_nonfinite_gradient_names_its_layer_and_step(tmp_path):
    tr_ref = []
    cfg = cfg_for(tmp_path, checkpoint_every=3)
    tr = Trainer(cfg, tiny_task(), log=lambda s: None)
    tr_ref.append(tr)
    poison_grad(tr.model.stack.layers[1].weight_hh, {5}, tr_ref)
    with pytest.raises(NonFiniteError, match=r"step 5 .*gradient.*stack\.layers\.1\.weight_hh") as err:
        tr.fit()
    assert "--on-nonfinite skip" in str(err.value)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["global_step"] == 3 and _finite_weights(ck["model"])
    assert _finite_weights(tr.model.state_dict())  # the bad step was not applied
    res = strict_json(tmp_path / "run" / "results.json")
    assert res["stopped_by_nonfinite"]["tensor"] == "stack.layers.1.weight_hh"


def test_skip_mode_skips_and_counts_nonfinite_steps(tmp_path):
    tr_ref = []
    cfg = cfg_for(tmp_path, on_nonfinite="skip")
    tr = Trainer(cfg, tiny_task(), log=lambda s: None)
    tr_ref.append(tr)
    poison_grad(tr.model.readout.weight, {2, 9, 10}, tr_ref)
    res = tr.fit()
    assert res["skipped_steps"] == 3 and res["global_steps"] == 18 and res["best_epoch"] >= 0
    assert math.isfinite(res["test"]["loss"])
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps if r.get("skipped")] == [2, 9, 10]
    assert [r["skipped_steps"] for r in recs if r["kind"] == "epoch"] == [1, 2, 0]
    assert all(math.isfinite(r["train_loss"]) for r in recs if r["kind"] == "epoch")
    # the optimiser took exactly the non-skipped steps
    assert {int(s["step"]) for s in tr.optimizer.state_dict()["state"].values()} == {15}
    assert strict_json(tmp_path / "run" / "results.json")["skipped_steps"] == 3


def test_skip_mode_gives_up_when_every_step_fails(tmp_path, monkeypatch):
    from spikestab.train import nonfinite

    monkeypatch.setattr(nonfinite, "MAX_SKIPPED_IN_A_ROW", 4)
    tr_ref = []
    tr = Trainer(cfg_for(tmp_path, on_nonfinite="skip"), tiny_task(), log=lambda s: None)
    tr_ref.append(tr)
    poison_grad(tr.model.readout.weight, set(range(3, 100)), tr_ref)
    with pytest.raises(NonFiniteError, match=r"step 6 .*4 steps in a row"):
        tr.fit()


def test_an_update_that_makes_weights_nonfinite_stops_even_in_skip_mode(tmp_path, monkeypatch):
    """An optimiser step that writes an inf (here forced at step 4) cannot be skipped after the fact."""
    from spikestab.train import trainer as trainer_mod

    make, trainers = trainer_mod.make_optimizer, []

    def make_overflowing(model, cfg):
        opt = make(model, cfg)
        step = opt.step

        def overflowing_step(*args, **kwargs):
            out = step(*args, **kwargs)
            if trainers[0].global_step + 1 == 4:
                with torch.no_grad():
                    model.stack.layers[1].weight_hh[0, 1] = float("inf")
            return out

        opt.step = overflowing_step
        return opt

    monkeypatch.setattr(trainer_mod, "make_optimizer", make_overflowing)
    tr = Trainer(cfg_for(tmp_path, on_nonfinite="skip", checkpoint_every=1), tiny_task(), log=lambda s: None)
    trainers.append(tr)
    with pytest.raises(NonFiniteError, match=r"step 4 .*update made parameter stack\.layers\.1\.weight_hh non-finite"):
        tr.fit()
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["global_step"] == 3 and _finite_weights(ck["model"])  # never a checkpoint of the inf weights
    assert strict_json(tmp_path / "run" / "results.json")["stopped_by_nonfinite"]["layer"] == "stack.layers.1"


def test_lr_beyond_what_adamw_can_represent_is_refused():
    """AdamW's first step is lr / (1 - 0.9): above 3.4e37 torch fails inside the optimiser."""
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, 3.4e\+37\], got 1e\+38"):
        TrainConfig(lr=1e38)
    TrainConfig(lr=3e37)


def test_a_climbing_loss_warns_once_and_is_recorded(tmp_path):
    logs = []
    res = Trainer(cfg_for(tmp_path, "hot", lr=10.0), tiny_task(), log=logs.append).fit()
    warned = [line for line in logs if line.startswith("warning: training loss")]
    assert len(warned) == 1 and "times its start" in warned[0]
    growth = res["loss_growth"]
    assert growth["factor"] >= 10.0 and growth["step"] > 1 and growth["start"] > 0
    assert strict_json(tmp_path / "hot" / "results.json")["loss_growth"] == growth
    logs.clear()
    res = Trainer(cfg_for(tmp_path, "calm"), tiny_task(), log=logs.append).fit()
    assert res["loss_growth"] is None and not any("training loss" in line for line in logs)


def test_cli_exits_nonzero_without_traceback_on_divergence(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "3e37", "--no-figures", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert "spikestab train: error: training stopped at step 2" in cap.err and "Traceback" not in cap.err
    assert "best-val epoch" not in cap.out
    strict_json(out / "results.json")


def test_cli_says_when_no_epoch_has_a_best_validation_loss(tmp_path, capsys):
    """Skipping every overflowing step leaves no finite validation loss: no "best-val epoch 0"."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "3e37", "--on-nonfinite", "skip", "--no-figures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = strict_json(out / "results.json")
    assert res["best_epoch"] == -1 and res["skipped_steps"] > 0
    assert "epoch 0" not in printed and "no epoch had a finite validation loss" in printed


def test_cli_best_epoch_matches_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--no-figures", "--out", str(out)]) == 0
    best = strict_json(out / "results.json")["best_epoch"]
    assert f"best-val epoch {best + 1}/2 (best_epoch {best} in results.json)" in capsys.readouterr().out


def test_on_nonfinite_is_validated():
    with pytest.raises(ValueError, match=r"on_nonfinite must be 'stop' or 'skip', got 'ignore'"):
        TrainConfig(on_nonfinite="ignore")


@pytest.mark.parametrize("sub", ["", "sub/run"])
def test_out_naming_a_file_fails_before_the_data_loads(tmp_path, capsys, monkeypatch, sub):
    from spikestab.train import trainer as trainer_mod

    target = tmp_path / "somefile"
    target.write_text("keep me")
    loaded = []
    monkeypatch.setattr(trainer_mod, "load_config_task", lambda cfg: loaded.append(cfg))
    out = target / sub if sub else target
    assert main(["train", *TINY, "--no-figures", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"out {str(out)!r}" in err and "is a file" in err and str(target) in err
    assert loaded == [] and target.read_text() == "keep me"


def test_language_model_divergence_stops_with_a_named_layer(tmp_path):
    from test_train import tiny_lm_task

    kw = dict(
        task="ptb", layers="16", batch_size=4, seq_len=10, epochs=2, eval_batch_size=4, lr=3e37, checkpoint_every=1
    )
    with pytest.raises(NonFiniteError, match=r"training stopped at step \d+ \(epoch 1/2") as err:
        Trainer(cfg_for(tmp_path, **kw), tiny_lm_task(), log=lambda s: None).fit()
    assert err.value.record["layer"] in ("embedding", "stack.layers.0")
    assert _finite_weights(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"])


def test_skip_mode_resumes_to_the_same_run(tmp_path):
    """Skipped-step counts and the loss-growth reference live in the checkpoint: an interrupted skip-mode
    run resumes to the uninterrupted one."""
    from test_train import Interrupt, interrupt_at

    def trainer(name, on_step=None):
        ref = []
        tr = Trainer(
            cfg_for(tmp_path, name, on_nonfinite="skip", lr=10.0), tiny_task(), on_step=on_step, log=lambda s: None
        )
        ref.append(tr)
        poison_grad(tr.model.readout.weight, {2, 8}, ref)
        return tr

    full = trainer("full")
    res_full = full.fit()
    with pytest.raises(Interrupt):
        trainer("cut", interrupt_at(5)).fit()
    resumed = trainer("cut")
    res_cut = resumed.fit(resume=True)
    assert res_full["skipped_steps"] == res_cut["skipped_steps"] == 2
    assert res_full["loss_growth"] == res_cut["loss_growth"] is not None
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_saved_before_on_nonfinite_existed_still_resumes(tmp_path):
    """A config saved without the on_nonfinite field ran as its default ("stop") and may be resumed."""
    cfg = cfg_for(tmp_path, epochs=1)
    Trainer(cfg, tiny_task(), log=lambda s: None).fit()
    ck_path = tmp_path / "run" / "checkpoint.pt"
    ck = load_checkpoint(ck_path)
    del ck["config"]["on_nonfinite"]
    for key in ("skipped_steps", "skipped_in_a_row", "loss_start", "loss_growth"):
        del ck[key]
    ck["acc"].pop("skipped")
    torch.save(ck, ck_path)
    assert Trainer(cfg, tiny_task(), log=lambda s: None).fit(resume=True)["epochs_done"] == 1
    with pytest.raises(ValueError, match="on_nonfinite: saved 'stop' vs now 'skip'"):
        Trainer(cfg_for(tmp_path, epochs=1, on_nonfinite="skip"), tiny_task(), log=lambda s: None).fit(resume=True)
