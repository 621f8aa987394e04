"""The ci gate's comparison: tolerance, verdicts, ignored keys, and the environment explanation."""

from __future__ import annotations

from cvpr24.core import cicheck


def _doc(acc=50.0, verdict="PASS", cpu="A", seconds=3.0):
    return {"table_1": {"ours": {"acc": acc, "train_seconds": seconds}},
            "claims": {"C1": {"margin": 1.0, "passed": True, "verdict": verdict}},
            "environment": {"cpu": cpu, "threads": 2}}


def test_equal_documents_pass_and_timings_and_environment_are_ignored():
    assert cicheck.compare(_doc(), _doc(seconds=99.0, cpu="B")) == []


def test_a_moved_metric_fails_beyond_tolerance_only():
    assert cicheck.compare(_doc(50.0), _doc(50.04)) == []          # within atol 1e-3 + rtol 1e-3 * 50
    problems = cicheck.compare(_doc(50.0), _doc(50.2))
    assert len(problems) == 1 and problems[0].startswith("table_1/ours/acc")


def test_a_changed_verdict_fails():
    problems = cicheck.compare(_doc(verdict="PASS"), _doc(verdict="INCONCLUSIVE"))
    assert problems == ["claims/C1/verdict: committed PASS, now INCONCLUSIVE"]


def test_missing_and_new_metrics_fail():
    old, new = _doc(), _doc()
    new["table_1"]["ours"]["extra"] = 1.0
    del new["table_1"]["ours"]["acc"]
    problems = cicheck.compare(old, new)
    assert any("no longer produced" in p for p in problems) and any("new metric" in p for p in problems)


def test_environment_explanation_names_what_differs(capsys):
    cicheck.explain_environment({"cpu": "A", "torch": "1"}, {"cpu": "B", "torch": "1"})
    out = capsys.readouterr().out
    assert "cpu: committed 'A', now 'B'" in out and "torch" not in out
    cicheck.explain_environment({"cpu": "A"}, {"cpu": "A"})
    assert "same environment fingerprint" in capsys.readouterr().out
    cicheck.explain_environment(None, {"cpu": "A"})
    assert "predates" in capsys.readouterr().out
