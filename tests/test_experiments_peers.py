"""The smoke scale of experiments/peer_models.py (snnTorch, Norse and SpikingJelly networks, defaults
against ``stabilize``, and the threshold x dampening grid) runs end to end and resumes: run JSON,
summary, Markdown table and figure (the cpu-scale results are committed)."""

import json

import pytest

from experiment_smoke import run_smoke

pytest.importorskip("snntorch")
pytest.importorskip("norse")
pytest.importorskip("spikingjelly")


def test_smoke_scale_writes_results_and_resumes(tmp_path):
    first = run_smoke("peer_models.py", tmp_path, "--grid", "always", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "docs" / "results" / "peers" / "smoke"
    runs = sorted(p.name for p in (out / "records" / "randman").glob("*.json"))
    assert len(runs) == 3 * (2 + 2)  # three libraries: defaults, stabilised, two grid points
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scale"] == "smoke" and [r["library"] for r in summary["rows"]] == [
        "snntorch",
        "norse",
        "spikingjelly",
    ]
    for row in summary["rows"]:
        assert 0.0 <= row["stabilized"]["mean"] <= 1.0 and row["defaults"]["n"] == 1
        grid = row["grid"]
        assert grid["runs"] == 2 and grid["complete"] and grid["best"]["setting"]["dampening"] == 0.3
        assert row["regime"][0] in ("dense", "sparse") and len(row["chosen"][0]) == 2  # two spiking modules
    record = json.loads((out / "records" / "randman" / "norse-stabilized-seed0.json").read_text())
    assert record["report"]["layers"][0]["name"] == "lif1" and record["stabilize_seconds"] > 0
    assert record["chosen_model"] == "best validation epoch" and len(record["history"]) == 1
    assert "| randman | SpikingJelly |" in (out / "peers.md").read_text()
    assert (out / "peers.png").stat().st_size > 1000
    # a second run reuses every finished run
    again = run_smoke("peer_models.py", tmp_path, "--grid", "always", timeout=600)
    assert again.returncode == 0 and "seed 0" not in again.stdout and "| randman | Norse |" in again.stdout
