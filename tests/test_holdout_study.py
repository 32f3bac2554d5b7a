"""The hold-out study's smoke scale runs end to end (every arm through ``spikestab sweep``), and its analysis
agrees with independent recomputations from the per-run records it writes."""

import json
import re
import shutil
import statistics
from pathlib import Path

import pytest
from scipy import stats as ss

from experiment_smoke import experiments, run_smoke, smoke_results

ROOT = Path(__file__).resolve().parent.parent


def test_holdout_smoke_scale(tmp_path):
    out = smoke_results("holdout_study.py", "holdout", tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert all(
        (out / f).stat().st_size > 1000
        for f in ("arms.png", "differences.png", "best_of_k.png", "regime_threshold.png")
    )
    assert summary["criteria"]["complete"] and "Pass criteria" in (out / "summary.md").read_text()
    diffs = []
    for name in ("smoke-a", "smoke-b"):
        res = json.loads((out / f"{name}.json").read_text())
        arms = res["arms"]
        assert {a: len(arms[a]) for a in ("auto", "grid-best", "fixed", "dense", "sparse")} == dict.fromkeys(
            ("auto", "grid-best", "fixed", "dense", "sparse"), 2
        )
        # the re-run setting is the grid's best by mean validation accuracy
        grid = arms["grid"]
        best = max(grid, key=lambda r: r["val"])["params"]
        assert res["grid_best_params"] == best
        auto = {r["seed"]: r["test"] for r in arms["auto"]}
        rerun = {r["seed"]: r["test"] for r in arms["grid-best"]}
        per_seed = [auto[s] - rerun[s] for s in sorted(auto)]
        row = next(r for r in summary["rows"] if r["config"] == name)
        ref = ss.ttest_rel([auto[s] for s in sorted(auto)], [rerun[s] for s in sorted(auto)])
        if per_seed[0] != per_seed[1]:
            assert row["minus"]["grid-best"]["p"] == pytest.approx(ref.pvalue)
        diffs.append(statistics.fmean(per_seed))
        # every auto run records the regime it chose and its measured ratio
        assert all(r["regime"]["regime"] in ("dense", "sparse") for r in arms["auto"])
    pooled = summary["pooled"]["grid-best"]["by_configuration"]
    assert pooled["n"] == 2 and pooled["mean"] == pytest.approx(statistics.fmean(diffs))
    assert len(summary["best_of_k"]["smoke-a"]) == 2
    long = json.loads((out / "smoke-a.json").read_text())["arms"]
    assert len(long["long-auto"]) == 2 and len(long["long-grid-best"]) == 2
    _resumes_from_committed_files(tmp_path, out, summary)


def _resumes_from_committed_files(tmp_path, out, summary):
    """A fresh machine has the committed databases and records but no run folders (protocol amendment 2):
    the analysis reads the same records and gives the same summary, and trains nothing again."""
    runs = tmp_path / "runs" / "holdout" / "smoke"
    committed = tmp_path / "docs" / "results" / "sweep_databases" / "holdout" / "smoke"
    for db in runs.glob("*/*/sweep.db"):
        (committed / db.parent.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db, committed / db.parent.parent.name / f"{db.parent.name}.db")
    shutil.rmtree(runs)
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in ("smoke-a", "smoke-b")}
    again = run_smoke("holdout_study.py", tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    to_run = [int(n) for n in re.findall(r"(\d+) to run", again.stdout + again.stderr)]
    assert to_run and not any(to_run)
    assert not list(runs.glob("*/*/trials/*"))
    for name, before in records.items():
        assert json.loads((out / f"{name}.json").read_text()) == before
    assert json.loads((out / "summary.json").read_text()) == summary


def test_fixed_setting_is_the_headlines():
    """(d) is frozen from the committed in-sample headline summary."""
    (holdout_study,) = experiments("holdout_study")
    committed = json.loads((ROOT / "docs" / "results" / "headline" / "cpu" / "summary.json").read_text())
    frozen = dict(kv.split("=") for kv in committed["fixed_setting"].split(","))
    assert {k: float(v) for k, v in frozen.items()} == holdout_study.FIXED_D


def test_readme_table_is_the_committed_summary():
    """README's out-of-sample table is what holdout_study.py renders from the committed summary.json (a hand
    edit, or a summary committed without regenerating the README, fails here)."""
    common, holdout_study = experiments("common", "holdout_study")
    summary = json.loads((ROOT / "docs" / "results" / "holdout" / "cpu" / "summary.json").read_text())
    table = holdout_study.readme_markdown(summary)
    assert "| mnist-lif-1x128 |" in table
    assert common.replace_block(ROOT / "README.md", "holdout_study.py", table, check=True)
