"""The smoke scale of the stability experiments (Figures 4 and 5) runs end to end: sweeps through
``spikestab sweep``, summary JSON, Markdown and figures (the cpu-scale results are committed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script,folder,figure", [("fig4_conditions.py", "fig4", "fig4.png"),
                                                  ("fig5_grids.py", "fig5", "fig5.png")])
def test_smoke_scale_writes_results(tmp_path, script, folder, figure):
    env = {**os.environ, "SPIKESTAB_EXPERIMENT_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--scale", "smoke", "--workers", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "docs" / "results" / folder / "smoke"
    assert (out / figure).stat().st_size > 1000 and "test accuracy" in (out / "summary.md").read_text()
    data = json.loads((out / ("fig5.json" if folder == "fig5" else "mnist-lif.json")).read_text())
    rows = [r for rows in data["panels"].values() for r in rows] if folder == "fig5" else data["settings"]
    assert rows and all(0.0 <= r["test_mean"] <= 1.0 and r["n"] == 1 for r in rows)
    if folder == "fig4":  # the recipe's choices and measured growth are recorded per setting
        auto = next(r for r in rows if r["setting"] == "auto")
        assert set(auto["trials"][0]["chosen"][0]) == {"D", "G"} and auto["growth_per_step"] is not None
    else:
        assert set(data["predictions"]["dampening"]) == {"III (paper)", "III (measured)", "G"}
        assert all(set(p) == {"value", "feasible"} for p in data["predictions"]["sharpness"].values())
