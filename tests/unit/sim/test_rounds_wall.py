"""The swarm's pace: from the last node finishing round 1 to the last finishing the final one."""

from sim.run import rounds_wall


def records(times: list[float]) -> list[dict[str, float]]:
    return [{"round": r, "time": t} for r, t in enumerate(times, start=1)]


def test_the_slowest_node_sets_both_ends():
    per_node = {"slow": records([13.0, 14.0, 15.5]), "fast": records([10.0, 11.0, 12.0])}
    assert rounds_wall(per_node, 3) == 15.5 - 13.0


def test_a_run_that_did_not_reach_its_last_round_has_no_pace():
    assert rounds_wall({"a": records([10.0, 11.0])}, 3) is None
    assert rounds_wall({"a": records([10.0])}, 1) is None
