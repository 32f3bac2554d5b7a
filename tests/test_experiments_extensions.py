"""The smoke scale of the extension tables (Table 1: DECOLLE rate control, Table 2: fluctuation-driven
initialisation) runs end to end: summary JSON, Markdown and figures (the cpu-scale results are committed)."""

import json

import pytest

from experiment_smoke import run_smoke, smoke_results


@pytest.mark.parametrize("script,folder", [("table1_decolle.py", "table1"), ("table2_fluctuation.py", "table2")])
def test_smoke_scale_writes_results(tmp_path, script, folder):
    out = smoke_results(script, folder, tmp_path)
    assert (out / f"{folder}.png").stat().st_size > 1000 and "test accuracy" in (out / "summary.md").read_text()
    data = json.loads((out / f"{folder}.json").read_text())
    if folder == "table1":
        rows = data["settings"]
        assert [r["setting"] for r in rows] == ["default", "f_from 0.158", "f_from 0.5"]
        assert all(0.0 <= r["test_mean"] <= 1.0 and r["n"] == 1 for r in rows)
        # the rate term is active up to the switch epoch only
        trial = data["trials"]["f_from 0.5"][0]["history"]
        assert [h["rate_target"] for h in trial] == [0.5, 0.5]
    else:
        for depth in ("shallow", "deep"):
            rows = data["table"][depth]
            assert set(rows) == {"default", "mu_U = theta", "mu_U = theta, nu = eps = 1"}
            assert all(0.0 <= r["test_mean"] <= 1.0 and r["n"] == 1 for r in rows.values())
            assert rows["mu_U = theta"]["target_mu_u"][0] == 1.0 and rows["default"]["target_mu_u"][0] == 0.0
    # a second run reuses the finished trials
    again = run_smoke(script, tmp_path)
    assert again.returncode == 0 and "seed 0 epoch" not in again.stdout and "[table2]" not in again.stdout
