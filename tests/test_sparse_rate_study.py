"""The sparse-rate study (experiments/sparse_rate.py) runs end to end at smoke scale through both stages,
and its decision and check follow the protocol on the records it writes (recomputed here with scipy)."""

import json
import statistics

import pytest
from scipy import stats as ss

from experiment_smoke import EXPERIMENTS, experiments, smoke_results

DECISION, CHECK = "randman-lif-2x96-c8-u80-d3", "randman-lif-1x96-c6-u60-d4"


def test_sparse_rate_study_smoke_scale(tmp_path):
    out = smoke_results("sparse_rate.py", "sparse_rate", tmp_path, "--configs", f"{DECISION},{CHECK}")
    summary = json.loads((out / "summary.json").read_text())
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in (DECISION, CHECK)}
    assert [records[n]["stage"] for n in (DECISION, CHECK)] == ["decision", "check"]
    for res in records.values():
        assert set(res["arms"]) == {"rate-0.03", "rate-0.01", "rate-0.003", "fixed"}
        for arm, r in res["arms"].items():
            assert sorted(r["seeds"]) == [3100, 3101] and len(r["val"]) == len(r["test"]) == 2
            if arm != "fixed":  # the recipe aimed D at the arm's rate wherever the regime came out sparse
                assert r["options"]["sparse_rate"] == float(arm.split("-")[1])
    # the decision: highest mean validation accuracy over the decision configuration, from the records
    val = {
        arm: statistics.fmean(records[DECISION]["arms"][arm]["val"]) for arm in ("rate-0.03", "rate-0.01", "rate-0.003")
    }
    assert summary["decision"]["val_means"] == pytest.approx(val)
    chosen = max(val, key=val.get)
    assert summary["decision"]["chosen"] == chosen
    check = summary["check"]
    if chosen == "rate-0.03":
        assert check["verdict"] == "no change"
    else:
        arms = records[CHECK]["arms"]
        a, b = (dict(zip(arms[x]["seeds"], arms[x]["test"])) for x in (chosen, "rate-0.03"))
        diffs = [a[s] - b[s] for s in (3100, 3101)]
        assert check["difference"] == pytest.approx(statistics.fmean(diffs))
        if diffs[0] != diffs[1]:
            assert check["p"] == pytest.approx(
                ss.ttest_rel([a[s] for s in (3100, 3101)], [b[s] for s in (3100, 3101)]).pvalue
            )
        assert check["verdict"] in ("held", "not held", "inconclusive")
    assert "Decision (validation accuracy" in (out / "summary.md").read_text()


def test_decision_and_check_on_hand_made_records():
    (sparse_rate,) = experiments("sparse_rate")

    def arm(val, test):
        return {"seeds": [1, 2, 3], "val": val, "test": test}

    results = {
        "d": {"stage": "decision", "arms": {
            "rate-0.03": arm([0.5, 0.5, 0.5], [0.5] * 3),
            "rate-0.01": arm([0.6, 0.6, 0.7], [0.1] * 3),  # best by validation; its test is never used
            "rate-0.003": arm([0.4, 0.4, 0.4], [0.9] * 3),
        }},
        "c": {"stage": "check", "arms": {
            "rate-0.03": arm([0.0] * 3, [0.50, 0.52, 0.48]),
            "rate-0.01": arm([0.0] * 3, [0.60, 0.63, 0.61]),
            "rate-0.003": arm([0.0] * 3, [0.1] * 3),
        }},
    }  # fmt: skip
    decision = sparse_rate.decide(results)
    assert decision["chosen"] == "rate-0.01" and decision["configs"] == ["d"]
    check = sparse_rate.check(results, decision["chosen"])
    assert check["difference"] == pytest.approx((0.10 + 0.11 + 0.13) / 3)
    assert check["verdict"] == "held" and check["n"] == 3
    assert sparse_rate.check(results, "rate-0.03")["verdict"] == "no change"


def test_rule_r_takes_the_low_rate_where_the_probe_found_a_timing_code():
    (sparse_rate,) = experiments("sparse_rate")

    def arm(test, codes):
        return {"seeds": [1, 2, 3], "val": [0.0] * 3, "test": test, "timing_codes": codes}

    timing, counts = [True] * 3, [False] * 3
    results = {
        "randman": {"stage": "check", "arms": {
            "rate-0.03": arm([0.30, 0.32, 0.31], timing),
            "rate-0.01": arm([0.0] * 3, timing),
            "rate-0.003": arm([0.40, 0.45, 0.41], timing),
        }},
        "shd": {"stage": "check", "arms": {  # no timing code: R is rate-0.03 itself (difference 0)
            "rate-0.03": arm([0.25, 0.26, 0.27], counts),
            "rate-0.01": arm([0.9] * 3, counts),
            "rate-0.003": arm([0.01] * 3, counts),
        }},
        "decided": {"stage": "decision", "arms": {a: arm([1.0] * 3, timing) for a in sparse_rate.CANDIDATES}},
    }  # fmt: skip
    r = sparse_rate.rule_r(results)
    assert r["n"] == 6 and r["configs"] == ["randman", "shd"] and r["probe_agrees_across_arms"]
    diffs = [0.10, 0.13, 0.10, 0.0, 0.0, 0.0]
    assert r["difference"] == pytest.approx(sum(diffs) / 6)
    assert r["p"] == pytest.approx(ss.ttest_1samp(diffs, 0.0).pvalue)
    results["shd"]["arms"]["rate-0.01"]["timing_codes"] = [False, True, False]
    assert not sparse_rate.rule_r(results)["probe_agrees_across_arms"]


def test_results_page_table_is_the_committed_study():
    """docs/results/sparse_rate.md's table is what sparse_rate.py renders from the committed records."""
    common, sparse_rate = experiments("common", "sparse_rate")
    root = EXPERIMENTS.parent
    _, text = sparse_rate.summarise(root / "docs" / "results" / "sparse_rate" / "cpu", "cpu")
    assert all(f"| {name} |" in text for name in sparse_rate.CONFIGS)
    assert common.replace_block(root / "docs" / "results" / "sparse_rate.md", "sparse_rate.py", text, check=True)
