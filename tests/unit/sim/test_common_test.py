"""A common test set named by file (`data.test_file`) and a run without validation split: the
scenario's checks, the plan, the baselines' cache key, the consensus model and the summary's
shapes (sim/common_test.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from node.baselines import Recipe
from node.checkpoint import save_checkpoint
from node.dataset import load_schema, load_table
from node.models import build_model
from node.params import model_params
from node.scaling import Scaler, local_stats
from node.training import EvalResult, TrainSettings, evaluate
from sim.common_test import consensus, from_history, one_model, per_site
from sim.run import cached_baselines, make_plan
from sim.scenario import ScenarioError, load_scenario

HEART = Path(__file__).resolve().parents[3] / "data" / "heart-disease"
THREE = ("cleveland", "hungarian", "switzerland")


def scenario(data: str = "", sites: tuple[str, ...] = THREE) -> str:
    files = "\n".join(f'{s} = "{HEART / f"processed.{s}.data"}"' for s in sites)
    return f"""\
name = "common-test"
backend = "inproc"
rounds = 2
[data]
schema = "{HEART / "schema.toml"}"
{data}
[data.sites]
{files}
[baselines]
centralized = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_a_test_file_is_resolved_like_the_other_paths_and_given_to_every_node(tmp_path):
    (tmp_path / "held-out.data").write_bytes((HEART / "processed.va.data").read_bytes())
    loaded = load_scenario(write(tmp_path, scenario('test_file = "held-out.data"')))
    assert loaded.data.test_file == tmp_path / "held-out.data"
    plan = make_plan(loaded, 0, tmp_path / "data")
    assert plan.test_file == tmp_path / "held-out.data"
    for name in THREE:
        assert plan.settings[name]["data.test_path"] == str(tmp_path / "held-out.data")
        assert plan.settings[name]["data.validation_fraction"] == 0.25


def test_a_test_file_that_does_not_match_the_schema_is_refused_before_any_node_starts(tmp_path):
    lines = (HEART / "processed.va.data").read_text().splitlines()
    cells = lines[4].split(",")
    cells[3] = "n/a"  # trestbps
    lines[4] = ",".join(cells)
    bad = tmp_path / "test.data"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, scenario(f'test_file = "{bad}"')))
    message = str(err.value)
    assert f"data.test_file: {bad}: not in the data schema's format" in message
    assert "column 'trestbps' (1 row), e.g. line 5" in message
    short = tmp_path / "short.data"  # a column missing: the line and the columns expected
    short.write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6\n")
    with pytest.raises(ScenarioError, match=rf"data.test_file: {short}, line 1: 13 fields, exp"):
        load_scenario(write(tmp_path, scenario(f'test_file = "{short}"')))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            f'test_file = "{HEART / "processed.va.data"}"\ntest_fraction = 0.2',
            r"data.test_file: give data.test_file \(a file\) or data.test_fraction .*not both",
        ),
        (
            f'test_file = "{HEART / "processed.cleveland.data"}"',
            r"data.test_file: .*processed.cleveland.data is also data.sites.cleveland: nodes",
        ),
        (
            "validation_fraction = 0",
            r"data.validation_fraction: 0 needs a common test set \(data.test_file or data.test_",
        ),
        ('test_file = "absent.data"', r"data.test_file: .*file not found"),
        ("validation_fraction = -0.5", r"data.validation_fraction: .*greater than or equal to 0"),
    ],
)
def test_test_set_keys_that_do_not_go_together_are_refused_naming_them(tmp_path, data, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, scenario(data)))


def test_a_test_file_is_refused_with_generated_records(tmp_path):
    text = f"""\
name = "syn"
[data]
synthetic = {{rows = 200, features = 3, seed = 0}}
split = "quantity"
nodes = 2
alpha = 1.0
test_file = "{HEART / "processed.va.data"}"
"""
    with pytest.raises(ScenarioError, match=r"data.test_file: not used with data.synthetic"):
        load_scenario(write(tmp_path, text))


def test_a_share_held_out_of_a_file_with_text_in_a_numeric_column_is_refused(tmp_path):
    """The nodes would refuse the held-out rows as their common test set: said at once, of the
    file the user wrote. Without a test set the same file is cleaned as ever (the row dropped)."""
    lines = (HEART / "processed.cleveland.data").read_text().splitlines()
    cells = lines[6].split(",")
    cells[4] = "high"  # chol
    lines[6] = ",".join(cells)
    records = tmp_path / "records.data"
    records.write_text("\n".join(lines) + "\n")
    text = f"""\
name = "one-file"
[data]
schema = "{HEART / "schema.toml"}"
file = "{records}"
split = "quantity"
nodes = 2
alpha = 1.0
"""
    assert load_scenario(write(tmp_path, text)).data.test_fraction is None
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text + "test_fraction = 0.2\n"))
    assert f"data.test_fraction: the test set is held out of {records}: not in the data " in str(
        err.value
    )
    assert "column 'chol' (1 row), e.g. line 7" in str(err.value)


def test_no_validation_split_with_a_test_set_is_passed_on_to_the_nodes(tmp_path):
    data = f'validation_fraction = 0\ntest_file = "{HEART / "processed.va.data"}"'
    plan = make_plan(load_scenario(write(tmp_path, scenario(data))), 0, tmp_path / "data")
    assert {plan.settings[n]["data.validation_fraction"] for n in THREE} == {0.0}


def test_the_baselines_cache_key_holds_the_test_set(tmp_path, monkeypatch):
    """Two runs alike but for the test file's rows: the second must not take the first's
    scores from the cache."""
    monkeypatch.setenv("MEDSWARM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sim.run.baselines", lambda *_: {"centralized": {"trained": True}})
    test = tmp_path / "test.data"
    test.write_bytes((HEART / "processed.va.data").read_bytes())
    loaded = load_scenario(write(tmp_path, scenario(f'test_file = "{test}"')))
    plan = make_plan(loaded, 0, tmp_path / "data")
    assert cached_baselines(loaded, plan, tmp_path)[1] is None  # trained
    assert cached_baselines(loaded, plan, tmp_path)[1] is not None  # cached
    test.write_text("\n".join(test.read_text().splitlines()[:100]) + "\n")
    assert cached_baselines(loaded, plan, tmp_path)[1] is None  # other rows: trained again


def test_the_consensus_is_the_row_weighted_average_of_the_nodes_last_checkpoints(tmp_path):
    table = load_table(HEART / "processed.va.data", load_schema(HEART / "schema.toml"))
    scaler = Scaler.from_stats(local_stats(table.features[:50]))
    recipe = Recipe("mlp", (4,), TrainSettings(), 2, 0.25, 0, 0)
    models = {n: build_model("mlp", table.features.shape[1], (4,), seed=i) for i, n in
              enumerate(("a", "b", "c"))}  # fmt: skip
    for name, model in models.items():
        out = tmp_path / "nodes" / name / "out"
        save_checkpoint(out / "checkpoint", 1, {k: v * 0 for k, v in model_params(model).items()},
                        {}, fsync=False)  # fmt: skip
        save_checkpoint(out / "checkpoint", 2, model_params(model), {}, fsync=False)  # the last
        (out / "scaler.json").write_text(json.dumps(scaler.to_dict()))
    rows = {"a": 10, "b": 30, "c": 1000}

    got = consensus(tmp_path, table, rows, ["a", "b"], recipe)  # "c" is not honest

    average = build_model("mlp", table.features.shape[1], (4,), seed=0)
    with torch.no_grad():
        for p, pa, pb in zip(
            average.parameters(), models["a"].parameters(), models["b"].parameters(), strict=True
        ):
            p.copy_(0.25 * pa + 0.75 * pb)
    expected = evaluate(average, scaler.transform(table.features), table.target)
    assert got == {"accuracy": pytest.approx(expected.accuracy), "auc": pytest.approx(expected.auc),
                   "loss": pytest.approx(expected.loss, rel=1e-5), "nodes": 2}  # fmt: skip
    assert consensus(tmp_path, table, rows, ["absent"], recipe) is None


def test_each_baseline_s_test_scores_end_with_its_final_model():
    def e(acc: float, auc: float | None = 0.5) -> EvalResult:
        return EvalResult(accuracy=acc, auc=auc, loss=1.0, n=10)

    central = one_model([e(0.5), e(0.75)])
    assert central["accuracy"] == 0.75 and central["auc"] == 0.5 and central["loss"] == 1.0
    assert [r["round"] for r in central["per_round"]] == [1, 2]
    local = per_site({"a": [e(0.5), e(0.6)], "b": [e(0.7, None), e(0.8, None)]})
    assert local["accuracy"] == pytest.approx(0.7) and local["auc"] == 0.5
    assert local["per_node"]["b"] == e(0.8, None).to_dict()
    assert local["per_round"][0] == {"round": 1, "accuracy": pytest.approx(0.6), "auc": 0.5}
    history = [{"round": 1, "test_accuracy": 0.9, "test_auc": np.nan, "test_loss": 0.3}]
    assert from_history(history) == {
        "accuracy": 0.9, "auc": None, "loss": 0.3,
        "per_round": [{"round": 1, "accuracy": 0.9, "auc": None, "loss": 0.3}],
    }  # fmt: skip
