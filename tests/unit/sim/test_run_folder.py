"""sim.run_folder: what `--replace` may delete and what the dashboard accepts as a run."""

from pathlib import Path

from sim.run_folder import holds_a_run, in_effect


def test_a_run_is_marked_by_a_seeds_plan_or_swarm_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a run")
    assert not holds_a_run(tmp_path)
    (tmp_path / "seed-3").mkdir()
    assert not holds_a_run(tmp_path)  # an empty seed folder is no run
    (tmp_path / "seed-3" / "run.json").write_text("{}")
    assert holds_a_run(tmp_path)
    single = tmp_path / "single"
    single.mkdir()
    (single / "swarm.json").write_text("{}")
    assert holds_a_run(single)


def test_a_window_is_in_effect_from_its_first_round_to_its_last() -> None:
    windows = [{"label": "va down", "from": 3, "to": 5}, {"label": "partition", "from": 5, "to": 6}]
    assert [in_effect(windows, r) for r in (2, 3, 5, 7)] == [
        [],
        ["va down"],
        ["va down", "partition"],
        [],
    ]
