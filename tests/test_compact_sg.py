"""The compact-SG study (experiments/compact_sg.py) runs end to end at smoke scale, counts a diverged run at
chance, and its paired analysis agrees with scipy's on the records it writes."""

import json
from pathlib import Path

import pytest
from scipy import stats as ss

from experiment_smoke import experiments, smoke_results

ROOT = Path(__file__).resolve().parent.parent


def test_compact_sg_smoke_scale(tmp_path):
    out = smoke_results("compact_sg.py", "compact_sg", tmp_path)
    res = json.loads((out / "mnist-lif-2x128.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert set(res["arms"]) == {"fast-sigmoid", "triangular-1", "triangular-4"}
    for arm in res["arms"].values():
        # every seed is in the analysis: finished runs with their accuracy, diverged ones at chance (10 %)
        assert sorted(arm["seeds"]) == [2700, 2701]
        assert all(arm["test"][arm["seeds"].index(s)] == 0.1 for s in arm["diverged"])
        assert arm["options"]["surrogate"] in ("fast-sigmoid", "triangular")
        assert len(arm["val"]) == len(arm["test"])
    # every finished run was stabilised by the recipe (D and G chose threshold and dampening)
    assert all(set(c[0]) == {"D", "G"} for arm in res["arms"].values() for c in arm["chosen"])
    ref = dict(zip(res["arms"]["fast-sigmoid"]["seeds"], res["arms"]["fast-sigmoid"]["test"]))
    for name in ("triangular-1", "triangular-4"):
        arm = dict(zip(res["arms"][name]["seeds"], res["arms"][name]["test"]))
        c = summary["configs"]["mnist-lif-2x128"]["comparisons"][name]
        diffs = [arm[s] - ref[s] for s in (2700, 2701)]
        assert c["difference"] == pytest.approx(sum(diffs) / 2)
        if diffs[0] != diffs[1]:
            t = ss.ttest_rel([arm[s] for s in (2700, 2701)], [ref[s] for s in (2700, 2701)])
            assert c["p"] == pytest.approx(t.pvalue)
            lo, hi = t.confidence_interval(0.95)
            assert c["ci"] == pytest.approx([lo, hi])
        assert c["verdict"] in ("held", "not held", "inconclusive")
    text = (out / "summary.md").read_text()
    assert "| mnist-lif-2x128 | triangular-4 |" in text and "Decision (protocol): incomplete" in text


def test_kernels_doc_table_is_the_committed_study():
    """docs/results/kernels.md's compact-SG table is what compact_sg.py renders from the committed records."""
    common, compact_sg = experiments("common", "compact_sg")
    _, text = compact_sg.summarise(ROOT / "docs" / "results" / "compact_sg" / "cpu", "cpu")
    assert "| shd-lif-2x256 | triangular-4 |" in text
    assert common.replace_block(ROOT / "docs" / "results" / "kernels.md", "compact_sg.py", text, check=True)
