"""benchmarks/profile_epoch.py at a tiny size: every stage timed, the shares add up, nothing left patched, and
the instrumented epoch trains exactly the weights of a plain one."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_train  # noqa: E402
import profile_epoch as pe  # noqa: E402

TINY = {
    "shd-lif": bench_train.Config("shd-lif", 12, 8, 6, 4, 3, density=0.2),
    "shd-alif": bench_train.Config("shd-alif", 12, 8, 6, 4, 3, adaptive=True, density=0.2),
}


@pytest.fixture
def tiny(monkeypatch):
    for name, cfg in TINY.items():
        monkeypatch.setitem(bench_train.CONFIGS, name, cfg)
    torch.set_num_threads(1)


def patched_names() -> dict:
    """The functions profile_epoch replaces while it times an epoch."""
    return {
        "backward": torch.Tensor.backward,
        "train_batches": pe.trainer_module.train_batches,
        "train_step": pe.trainer_module.train_step,
        "add_step": pe.trainer_module.add_step,
        "losses": pe.step.losses,
        "apply_update": pe.step.apply_update,
        "bad_update": pe.nonfinite.bad_update,
    }


def test_every_stage_timed_and_shares_add_up(tiny, tmp_path):
    before = patched_names()
    out = pe.main(
        ["--configs", "shd-lif,shd-alif", "--batches", "2", "--epochs", "1", "--no-stabilize", "--dropouts", "0.1,0"]
        + ["--out", str(tmp_path)]
    )
    assert patched_names() == before
    assert json.loads((tmp_path / "profile_epoch.json").read_text())["runs"][0]["config"] == "shd-lif"
    assert "share of epoch" in (tmp_path / "profile_epoch.md").read_text()
    assert [(r["config"], r["dropout"], r["path"]) for r in out["runs"]] == [
        (name, dropout, path)
        for name in ("shd-lif", "shd-alif")
        for dropout in (0.1, 0.0)
        for path in ("before", "now")
    ]
    # before (torch's dropout, dense batches) and now, side by side: the same weights, epoch times of both
    assert [(r["config"], r["same_weights"]) for r in out["side_by_side"]] == [
        (name, True) for name in ("shd-lif", "shd-lif", "shd-alif", "shd-alif")
    ]
    assert all(len(r[p]["cpu_s"]) == 1 and r["speedup_cpu"] > 0 for r in out["side_by_side"] for p in ("before", "now"))
    for run in out["runs"]:
        stages = run["stages"]
        for share in ("wall_share", "cpu_share"):
            assert sum(s[share] for s in stages.values()) == pytest.approx(1.0, abs=1e-9)
        must = [pe.DATA, pe.READOUT, pe.LOSS, pe.BW_LOSS, pe.BW_READOUT, pe.ADAMW, pe.CLIP, pe.LOOP]
        must += [f(i) for i in (1, 2) for f in (pe.projection, pe.time_loop, pe.bw_time_loop, pe.bw_projection)]
        must += [pe.DROPOUT, pe.BW_DROPOUT] if run["dropout"] else []
        assert all(stages[label]["wall_s"] > 0 for label in must), [k for k in must if not stages[k]["wall_s"] > 0]
        assert stages[pe.BACKWARD]["wall_s"] == pytest.approx(0.0, abs=1e-3)  # the hooks split it all
        if not run["dropout"]:  # dropout 0 hands its input on: no dropout backward to time
            assert stages[pe.BW_DROPOUT]["wall_s"] == 0


def test_instrumented_epoch_trains_the_same_weights(tiny, tmp_path):
    """The wrappers pass every call through: the same seed gives bitwise the same weights."""
    weights = []
    for k, timed in enumerate((False, True)):
        tr = pe.make_trainer(TINY["shd-lif"], 3, str(tmp_path / f"run{k}"), dropout=0.1)
        metrics = tr.folder.open(resume=False)
        tr.model.train()
        clock = pe.Clock()
        if timed:
            with pe.instrumented(tr, clock):
                tr._train_epoch(metrics, tr.batches_per_epoch())
        else:
            tr._train_epoch(metrics, tr.batches_per_epoch())
        weights.append(tr.model.state_dict())
    assert clock.wall[pe.ADAMW] > 0
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name


def test_clock_counts_inner_stages_in_the_inner_stage_only():
    clock = pe.Clock()
    t0 = time.perf_counter()
    with clock.stage("outer"):
        time.sleep(0.02)
        with clock.stage("inner"):
            time.sleep(0.03)
    total = time.perf_counter() - t0
    assert clock.wall["inner"] >= 0.03
    assert clock.wall["outer"] >= 0.02
    assert clock.wall["outer"] + clock.wall["inner"] == pytest.approx(total, abs=1e-3)


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--epochs must be an integer >= 1"):
        pe.main(["--epochs", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--configs"):
        pe.main(["--configs", "nope", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--dropouts must be a comma list of rates in \[0, 1\)"):
        pe.main(["--dropouts", "0.1,1.5", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
