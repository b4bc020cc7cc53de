"""A long bench stopped part way resumes: each finished run is journaled as it ends, and a run
is reused only when its scenario and the code are unchanged; a failed run is run again."""

import json

import pytest
from rich.console import Console

from medswarm.bench import journal as journal_module
from medswarm.bench import robustness as rb
from medswarm.bench.journal import RunJournal


def test_a_run_is_found_again_by_its_scenario_and_code(tmp_path, monkeypatch):
    path = tmp_path / "bench.runs.jsonl"
    first = RunJournal(path)
    first.add("scenario A", {"nodes": {"n0": 0.9}, "seconds": 1.0})
    again = RunJournal(path)
    assert again.get("scenario A") == {"nodes": {"n0": 0.9}, "seconds": 1.0}
    assert again.get("scenario B") is None
    monkeypatch.setattr(journal_module, "code_fingerprint", lambda: "other code")
    changed = RunJournal(path)
    assert changed.get("scenario A") is None
    assert RunJournal(path, fresh=True).results == {} and not path.exists()


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_run_still_recorded(tmp_path):
    path = tmp_path / "bench.runs.jsonl"
    first = RunJournal(path)
    first.add("A", {"seconds": 1.0})
    with path.open("a") as out:
        out.write('{"key": "cut sh')  # the process died mid-write
    second = RunJournal(path)
    assert second.skipped_lines == 1
    second.add("B", {"seconds": 2.0})
    third = RunJournal(path)
    assert third.skipped_lines == 1
    assert third.get("A") == {"seconds": 1.0}
    assert third.get("B") == {"seconds": 2.0}


def test_the_code_fingerprint_follows_any_source_change(tmp_path):
    (tmp_path / "node").mkdir()
    source = tmp_path / "node" / "merge.py"
    source.write_text("x = 1\n")
    before = journal_module.code_fingerprint(tmp_path, ("node",))
    source.write_text("x = 2\n")
    assert journal_module.code_fingerprint(tmp_path, ("node",)) != before


def fake_summary(nodes, bad, accuracy):
    return {
        "nodes": {n: {"accuracy": accuracy, "honest": n not in bad} for n in rb.node_names(nodes)}
    }


def test_a_stopped_bench_resumes_without_running_what_it_finished(tmp_path, monkeypatch):
    settings = dict(
        rounds=2, seeds=[0], attacks=["sign_flip"], rules=["metropolis", "median"],
        fractions=[0.25], workers=1, nodes=8,
    )  # fmt: skip
    ran: list[str] = []

    def crash_on_the_third(path, folder):
        if len(ran) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third run
        ran.append(path.stem)
        return fake_summary(8, rb.attackers(0, 0.25, 8) if "sign_flip" in path.stem else [], 0.9)

    journal_path = tmp_path / "out.runs.jsonl"
    monkeypatch.setattr(rb, "_run", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        rb.run_robustness_bench(Console(quiet=True), journal=RunJournal(journal_path), **settings)
    assert len(ran) == 2 and len(journal_path.read_text().splitlines()) == 2

    def run_the_rest(path, folder):
        ran.append(path.stem)
        if path.stem == "s0-median-sign_flip-25":
            raise rb.SimError("a node failed")  # a failed run: not journaled
        return fake_summary(8, rb.attackers(0, 0.25, 8) if "sign_flip" in path.stem else [], 0.8)

    monkeypatch.setattr(rb, "_run", run_the_rest)
    console = Console(record=True, width=200)
    results = rb.run_robustness_bench(console, journal=RunJournal(journal_path), **settings)
    assert ran == [
        "s0-metropolis-clean-0", "s0-metropolis-sign_flip-25",  # before the crash
        "s0-median-clean-0", "s0-median-sign_flip-25",  # after it: only the rest
    ]  # fmt: skip
    printed = console.export_text()
    assert "resuming: 2 finished run(s)" in printed
    assert printed.count("(finished before)") == 2
    by_rule = {(c["rule"], c["byzantine_fraction"]): c for c in results["cells"]}
    assert by_rule[("metropolis", 0.25)]["accuracy"] == pytest.approx(0.9)  # the journaled
    assert by_rule[("median", 0.0)]["accuracy"] == pytest.approx(0.8)
    assert len(results["errors"]) == 1
    lines = [json.loads(line) for line in journal_path.read_text().splitlines()]
    assert len(lines) == 3  # the failed run is not among them: the next start runs it again


def test_the_command_resumes_from_its_journal_and_removes_it_once_the_json_is_written(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from medswarm.cli import app

    out = tmp_path / "table.json"
    journal = RunJournal(out.with_suffix(".runs.jsonl"))
    clean = rb.scenario_text(rb.RULES["metropolis"], None, [], 0, rounds=2, workers=1)
    journal.add(clean, {"nodes": {n: 0.7 for n in rb.node_names()},
                                     "honest": rb.node_names(), "seconds": 3.0})  # fmt: skip
    ran: list[str] = []

    def attacked(path, folder):
        ran.append(path.stem)
        return fake_summary(rb.NODES, rb.attackers(0, 0.2), 0.6)

    monkeypatch.setattr(rb, "_run", attacked)
    args = ["bench", "robustness", "--json", str(out), "--rounds", "2", "--seeds", "0",
            "--rules", "metropolis", "--attacks", "sign_flip", "--fractions", "0.2",
            "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ran == ["s0-metropolis-sign_flip-20"]  # the clean run came from the journal
    cells = {c["byzantine_fraction"]: c for c in json.loads(out.read_text())["cells"]}
    assert cells[0.0]["accuracy"] == pytest.approx(0.7)
    assert cells[0.2]["accuracy"] == pytest.approx(0.6)
    assert not out.with_suffix(".runs.jsonl").exists()


def test_after_a_failed_run_the_command_keeps_its_journal_to_retry_only_that_one(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from medswarm.cli import app

    out = tmp_path / "table.json"

    def clean_only(path, folder):
        if "sign_flip" in path.stem:
            raise rb.SimError("a node failed")
        return fake_summary(rb.NODES, [], 0.7)

    monkeypatch.setattr(rb, "_run", clean_only)
    args = ["bench", "robustness", "--json", str(out), "--rounds", "2", "--seeds", "0",
            "--rules", "metropolis", "--attacks", "sign_flip", "--fractions", "0.2",
            "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "runs only those again" in " ".join(result.output.split())
    assert len(out.with_suffix(".runs.jsonl").read_text().splitlines()) == 1  # the clean run
