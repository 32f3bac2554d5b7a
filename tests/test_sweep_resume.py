"""A sweep whose worker is killed (SIGKILL) in the middle of a trial: rerunning the same command runs
only what is missing, the killed trial continues from its checkpoint (its heartbeat went stale, Optuna
failed it, the retry found the same run directory), and the report counts every trial once."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from spikestab.files import read_jsonl
from spikestab.sweep import report
from spikestab.sweep.storage import default_url, open_storage
from spikestab.train.checkpoint import load_latest_checkpoint
from sweep_tiny import cli_args

# a bigger tiny run (8 epochs, 23 steps each, a checkpoint every 2 steps: ~1.5 s) so the kill lands mid-trial
SLOW = cli_args(
    epochs=8,
    layers=[64],
    checkpoint_every=2,
    task_options={"n_classes": 3, "n_units": 20, "n_steps": 50, "samples_per_class": 150},
)


def _epochs_done(run):
    return sum(1 for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "epoch") if run.exists() else 0


def test_killed_worker_rerun_resumes_only_the_missing_trials(tmp_path):
    out = tmp_path / "kill"
    cmd = [
        sys.executable,
        "-m",
        "spikestab.cli",
        "sweep",
        "--out",
        str(out),
        "--grid",
        "threshold=0.5,0.7,1.0",
        "--heartbeat",
        "1",
        "--grace",
        "2",
        *SLOW,
    ]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    trials_dir = out / "trials"
    deadline = time.monotonic() + 240
    victim = None
    while victim is None:  # the second point, once it has a checkpoint and a finished epoch, not results
        assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "first.log").read_text()
        for run in trials_dir.glob("threshold=0.7_*") if trials_dir.exists() else []:
            if (run / "checkpoint.pt").exists() and _epochs_done(run) >= 1 and not (run / "results.json").exists():
                victim = run
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    first = next(trials_dir.glob("threshold=0.5_*"))
    first_results = (first / "results.json").read_bytes()
    # what the resumed trial reads: the kill can land between the two renames of a checkpoint rotation,
    # when only checkpoint.prev.pt exists (the trainer falls back to it)
    killed_at, _ = load_latest_checkpoint(victim / "checkpoint.pt", log=lambda s: None)
    assert not killed_at["finished"] and killed_at["global_step"] > 0
    assert not list(trials_dir.glob("threshold=1_*"))

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    starts = [line for line in rerun.stdout.splitlines() if line.startswith("[sweep] start")]
    assert len(starts) == 2, rerun.stdout
    assert any("threshold=0.7" in s and f"resuming at step {killed_at['global_step']}" in s for s in starts)
    assert any("threshold=1 " in s for s in starts) and not any("threshold=0.5" in s for s in starts)
    assert (first / "results.json").read_bytes() == first_results

    trials = optuna.load_study(study_name="kill", storage=open_storage(default_url(out))).get_trials()
    by_point = {}
    for t in trials:
        by_point.setdefault(t.params["threshold"], []).append(t)
    assert {k: [t.state for t in v] for k, v in by_point.items()} == {
        0.5: [TrialState.COMPLETE],
        0.7: [TrialState.FAIL, TrialState.COMPLETE],
        1.0: [TrialState.COMPLETE],
    }
    retry = by_point[0.7][1]
    assert retry.system_attrs["failed_trial"] == by_point[0.7][0].number
    assert retry.user_attrs["resumed_from_step"] == killed_at["global_step"]
    assert retry.user_attrs["run_dir"] == str(victim.resolve())
    assert sorted(retry.intermediate_values) == list(range(8))  # epochs before the kill reported again

    # the run continued, not restarted: one uninterrupted step sequence, one resume in its log
    records = read_jsonl(victim / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "step"]
    results = json.loads((victim / "results.json").read_text())
    assert steps == list(range(1, results["global_steps"] + 1)) and results["epochs_done"] == 8
    assert (victim / "train.log").read_text().count("resuming") == 1

    data = report(out)
    assert [s["n"] for s in data["settings"]] == [1, 1, 1]
    assert data["counts"]["complete"] == 3 and data["counts"]["retried"] == 1 and data["counts"]["duplicates"] == 0
