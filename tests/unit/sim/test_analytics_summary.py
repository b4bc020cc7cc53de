"""An analytics run's summary: the answer only when every node released the same one, and the
errors with node names for the peer IDs the nodes know each other by."""

import json

from sim.analytics import collect_analytics, write_analytics_report

ANSWER = {"rows": 10, "sites": 2, "secure_sums": 3, "members": 2, "where": [], "outcome": "o",
          "disclosure": {"min_cell": 5, "min_sites": 2}}  # fmt: skip


def _node(folder, name, peer_id, outcome):
    out = folder / "nodes" / name / "out"
    out.mkdir(parents=True)
    (out / "peer.json").write_text(json.dumps({"name": name, "peer_id": peer_id}))
    if outcome is not None:
        (out / "analytics.json").write_text(json.dumps(outcome))


def _answered(answer):
    return {"answer": answer, "seconds": 1.0, "bytes_sent": 10, "bytes_received": 20}


def test_the_same_answer_everywhere_is_the_run_answer(tmp_path):
    _node(tmp_path, "a", "Qa", _answered(ANSWER))
    _node(tmp_path, "b", "Qb", _answered(ANSWER))
    summary = collect_analytics(tmp_path, ["a", "b"], "s", 0, "inproc")
    assert summary["agreed"] and summary["answer"] == ANSWER
    assert summary["nodes"]["a"]["bytes_per_node"] == 30
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "report.md") in write_analytics_report(tmp_path, summary)


def test_different_answers_release_none(tmp_path):
    _node(tmp_path, "a", "Qa", _answered(ANSWER))
    _node(tmp_path, "b", "Qb", _answered({**ANSWER, "rows": 11}))
    summary = collect_analytics(tmp_path, ["a", "b"], "s", 0, "inproc")
    assert not summary["agreed"] and summary["answer"] is None


def test_a_stopped_query_names_the_missing_node(tmp_path):
    _node(tmp_path, "a", "Qa", {"error": "secure sum x/3: nothing from Qb within 8 s"})
    _node(tmp_path, "b", "Qb", None)  # killed: it wrote nothing
    summary = collect_analytics(tmp_path, ["a", "b"], "s", 0, "inproc")
    assert summary["answer"] is None
    assert summary["nodes"]["a"]["error"] == "secure sum x/3: nothing from b (Qb) within 8 s"
    assert summary["nodes"]["b"] == {"answered": False, "error": "no answer", "seconds": None,
                                     "bytes_per_node": None}  # fmt: skip
    write_analytics_report(tmp_path, summary)
    assert "No answer was released" in (tmp_path / "report.md").read_text()
