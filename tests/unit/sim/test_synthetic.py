"""The synthetic workload (sim/synthetic.py) and the common test set (`data.test_fraction`):
seeded records, their schema, the scenario keys and their errors, the held-out rows."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from node.dataset import load_schema, load_table
from sim import partition, synthetic
from sim.common_test import from_history, per_round
from sim.run import make_plan
from sim.scenario import ScenarioError, load_scenario
from sim.synthetic import SyntheticSpec

SPEC = SyntheticSpec(rows=600, features=6, seed=3)


def scenario_text(data: str, name: str = "syn") -> str:
    return f"""\
name = "{name}"
backend = "inproc"
rounds = 2
[data]
{data}
[chain]
backend = "none"
"""


SYNTHETIC = """\
synthetic = {rows = 600, features = 6, seed = 3}
split = "dirichlet"
nodes = 4
alpha = 0.5
test_fraction = 0.2
"""


def write(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(scenario_text(data))
    return path


def test_the_same_seed_gives_the_same_records_and_another_seed_others():
    x, y = synthetic.generate(SPEC)
    again = synthetic.generate(SPEC.model_copy())
    synthetic.generate.cache_clear()
    fresh = synthetic.generate(SyntheticSpec(rows=600, features=6, seed=3))
    other = synthetic.generate(SyntheticSpec(rows=600, features=6, seed=4))
    assert x.shape == (600, 6) and x.dtype == np.float32 and y.shape == (600,)
    assert set(np.unique(y)) == {0, 1}
    for same in (again, fresh):
        np.testing.assert_array_equal(same[0], x)
        np.testing.assert_array_equal(same[1], y)
    assert not np.array_equal(other[0], x)


def test_written_records_load_with_their_schema(tmp_path):
    data, schema_path = synthetic.write_synthetic(SPEC, tmp_path)
    schema = load_schema(schema_path)
    table = load_table(data, schema)
    x, y = synthetic.generate(SPEC)
    assert data.suffix == ".parquet" and schema.target.column == "y"
    assert table.columns == ["x00", "x01", "x02", "x03", "x04", "x05"]
    assert table.report.rows_out == 600 and table.report.dropped == {}
    np.testing.assert_array_equal(table.features, x.astype(np.float64))
    np.testing.assert_array_equal(table.target, y)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rows": 1, "features": 4}, "rows"),
        ({"rows": 100, "features": 1}, "features"),
        ({"rows": 100, "features": 4, "informative": 5}, r"informative \(5\) cannot exceed"),
        ({"rows": 100, "features": 4, "flip_y": 1.5}, "flip_y"),
        ({"rows": 100, "features": 4, "colour": 1}, "colour"),
    ],
)
def test_bad_specs_are_refused_naming_the_key(fields, message):
    with pytest.raises(ValidationError, match=message):
        SyntheticSpec(**fields)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (SYNTHETIC.replace("rows = 600", "rows = 0"), r"data\.synthetic\.rows: .*greater than"),
        (SYNTHETIC.replace('"dirichlet"', '"natural"'), r"data\.split: 'natural' needs a site"),
        (SYNTHETIC + 'schema = "s.toml"\n', r"data\.schema: "),
        (SYNTHETIC.replace("nodes = 4", "nodes = 400"), r"data: cannot split 480 rows into 400"),
        (SYNTHETIC.replace("0.2", "1.5"), r"data\.test_fraction: .*less than 1"),
        (SYNTHETIC.replace('split = "dirichlet"\n', ""), r"data\.split: required with data\.syn"),
    ],
)
def test_bad_synthetic_scenarios_name_the_key(tmp_path, data, message):
    (tmp_path / "s.toml").write_text("")
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, data))


def test_test_fraction_is_refused_with_per_site_files(tmp_path):
    site = tmp_path / "a.csv"
    site.write_text("x,y\n1,0\n")
    data = f'schema = "s.toml"\ntest_fraction = 0.2\n[data.sites]\na = "{site}"\nb = "{site}"\n'
    (tmp_path / "s.toml").write_text("")
    with pytest.raises(ScenarioError, match=r"data\.test_fraction: needs one data set"):
        load_scenario(write(tmp_path, data))


def test_hold_out_is_stratified_seeded_and_disjoint():
    y = np.array([0] * 80 + [1] * 20)
    keep, test = partition.hold_out(y, 0.25, seed=1)
    assert np.bincount(y[test]).tolist() == [20, 5]
    assert sorted([*keep, *test]) == list(range(100))
    np.testing.assert_array_equal(partition.hold_out(y, 0.25, seed=1)[1], test)
    assert not np.array_equal(partition.hold_out(y, 0.25, seed=2)[1], test)
    with pytest.raises(ValueError, match="holds out no row"):
        partition.hold_out(np.array([0, 1]), 0.1, seed=0)


def test_the_plan_holds_out_a_common_test_set_apart_from_the_nodes_files(tmp_path):
    scenario = load_scenario(write(tmp_path, SYNTHETIC))
    plan = make_plan(scenario, 0, tmp_path / "data")
    x, y = synthetic.generate(SPEC)
    assert plan.test_file is not None and plan.test_file.suffix == ".parquet"
    assert all(f.suffix == ".parquet" for f in plan.files.values())
    assert plan.schema == tmp_path / "data" / "schema.toml"
    for name in plan.files:
        assert plan.settings[name]["data.test_path"] == str(plan.test_file)

    def rows(path: Path) -> set[tuple[float, ...]]:
        return {tuple(r) for r in load_table(path, load_schema(plan.schema)).features.tolist()}

    test = rows(plan.test_file)
    nodes = [rows(f) for f in plan.files.values()]
    assert len(test) == 120  # 20 % of 600, per class
    assert all(not (test & part) for part in nodes)
    assert set().union(test, *nodes) == {tuple(r) for r in x.astype(np.float64).tolist()}
    labels = pq.read_table(plan.test_file).column("y").to_numpy()
    assert abs(labels.mean() - y.mean()) < 0.01  # stratified: the classes' shares


def test_test_summary_is_per_round_over_the_honest_nodes():
    def rec(r: int, acc: float | None) -> dict:
        return {"round": r, **({"test": {"accuracy": acc}} if acc is not None else {})}

    per_node = {
        "a": [rec(1, 0.5), rec(2, 0.7)],
        "b": [rec(1, 0.7), rec(2, 0.9)],
        "evil": [rec(1, 0.0), rec(2, 0.0)],
        "c": [rec(1, None)],  # no test set
    }
    history = [
        {"round": r, "test_accuracy": acc, "test_auc": float("nan"), "test_loss": 0.5}
        for r, acc in ((1, 0.6), (2, 0.8))
    ]
    got = per_round(per_node, ["a", "b", "c"], {"fedavg": {"test": from_history(history)}})
    assert got["per_round"] == [
        {"round": 1, "mean": 0.6, "min": 0.5, "max": 0.7, "nodes": 2},
        {"round": 2, "mean": pytest.approx(0.8), "min": 0.7, "max": 0.9, "nodes": 2},
    ]
    assert got["fedavg_per_round"] == [{"round": 1, "accuracy": 0.6}, {"round": 2, "accuracy": 0.8}]
