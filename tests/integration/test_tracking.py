"""`sim run --mlflow` end to end: a small inproc run logged to a SQLite store, read back with
MlflowClient and compared with its run folder; `sim track` logs the same folder alike; several
seeds nest under a parent run."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from gossip.logs import LOG_LEVEL_ENV
from medswarm.cli import app
from node.metrics import read_records
from sim import tracking
from tests.integration.test_sim import SITES

pytestmark = pytest.mark.integration

ROUNDS = 3
SCENARIO = (
    f"""
name = "tracked-small"
backend = "inproc"
rounds = {ROUNDS}
"""
    + SITES
    + """
[topology]
kind = "ring"

[baselines]
local_only = true
"""
)
PER_ROUND = {  # metric -> where in a metrics.jsonl record
    "accuracy": ("merged", "accuracy"),
    "auc": ("merged", "auc"),
    "loss": ("merged", "loss"),
    "train_loss": ("train_loss",),
    "bytes_sent": ("bytes_sent",),
    "round_seconds": ("round_seconds",),
}


def words(text: str) -> str:
    return " ".join(text.split())


def dig(record, where):
    for key in where:
        record = record[key]
    return float(record)


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client, run_id, path=None):
    found = []
    for a in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return found


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    from sim.local_swarm import HEART_DISEASE

    folder = tmp_path_factory.mktemp("tracking")
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{data}", str(HEART_DISEASE)))
    uri = f"sqlite:///{folder}/store/mlflow.db"
    out = folder / "out"
    level = os.environ.get(LOG_LEVEL_ENV)  # the command exports its level for its nodes
    try:
        args = ["sim", "run", str(scenario), "--out", str(out), "--mlflow", uri]
        result = CliRunner().invoke(app, args)
    finally:
        if level is None:
            os.environ.pop(LOG_LEVEL_ENV, None)
        else:
            os.environ[LOG_LEVEL_ENV] = level
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked-small")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id in words(result.output)
    summary = json.loads((out / "summary.json").read_text())
    return out, uri, client, run, summary


def test_each_nodes_metric_history_is_its_metrics_jsonl(tracked):
    out, _, client, run, summary = tracked
    assert len(summary["nodes"]) == 4
    for node in summary["nodes"]:
        records = read_records(out / "nodes" / node / "out" / "metrics.jsonl")
        assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
        for name, where in PER_ROUND.items():
            expected = [(r["round"], dig(r, where)) for r in records]
            assert history(client, run.info.run_id, f"{name}.{node}") == expected, (name, node)


def test_the_mean_series_is_the_mean_over_the_nodes_each_round(tracked):
    out, _, client, run, summary = tracked
    per_node = [read_records(out / "nodes" / n / "out" / "metrics.jsonl") for n in summary["nodes"]]
    for name, where in PER_ROUND.items():
        expected = [
            (r, float(np.mean([dig(rs[r - 1], where) for rs in per_node])))
            for r in range(1, ROUNDS + 1)
        ]
        got = history(client, run.info.run_id, f"mean.{name}")
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-12), name


def test_the_summary_metrics_are_summary_json(tracked):
    _, _, _, run, summary = tracked
    metrics = run.data.metrics
    assert metrics["summary.mean_accuracy"] == summary["mean"]["accuracy"]
    assert metrics["summary.mean_auc"] == summary["mean"]["auc"]
    local = summary["baselines"]["local_only"]
    assert metrics["summary.local_only.mean_accuracy"] == local["mean_accuracy"]
    assert metrics["summary.local_only.mean_auc"] == local["mean_auc"]
    assert metrics["summary.wall_seconds"] == summary["wall_seconds"]
    for node, v in summary["nodes"].items():
        assert metrics[f"summary.accuracy.{node}"] == v["accuracy"]
        assert metrics[f"summary.auc.{node}"] == v["auc"]


def test_params_and_tags_are_the_scenario_as_run(tracked):
    _, _, _, run, _ = tracked
    params, tags = run.data.params, run.data.tags
    assert params["name"] == "tracked-small"
    assert params["rounds"] == str(ROUNDS)
    assert params["backend"] == "inproc"
    assert params["topology.kind"] == "ring"
    assert params["data.sites.cleveland"].endswith("processed.cleveland.data")
    assert params["baselines.local_only"] == "true"
    assert tags["medswarm.backend"] == "inproc"
    assert tags["medswarm.seed"] == "0"
    assert tags["medswarm.version"] not in ("", "unknown")
    assert run.info.status == "FINISHED"


def test_the_artifacts_are_the_run_files_and_no_key(tracked, tmp_path):
    out, _, client, run, summary = tracked
    assert list(out.glob("nodes/*/*.key")), "the run folder holds key files to keep out"
    logged = artifacts(client, run.info.run_id)
    for name in ("summary.json", "consensus.json", "report.html", "report.md", "scenario.toml"):
        assert name in logged
    assert {f"nodes/{n}/metrics.jsonl" for n in summary["nodes"]} <= set(logged)
    assert any(p.endswith(".png") for p in logged)
    assert not [p for p in logged if p.endswith(".key") or "key" in p.rsplit("/", 1)[-1]]
    got = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(got).read_text()) == summary


def test_sim_track_logs_an_existing_folder_alike(tracked):
    out, uri, client, run, _ = tracked
    args = ["sim", "track", str(out), "--mlflow", uri, "--mlflow-experiment", "again"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [again] = client.search_runs([client.get_experiment_by_name("again").experiment_id])
    assert again.info.run_id != run.info.run_id
    assert again.data.params == run.data.params
    assert again.data.metrics == run.data.metrics
    for key in run.data.metrics:
        assert history(client, again.info.run_id, key) == history(client, run.info.run_id, key)


def test_several_seeds_are_runs_under_a_parent(tracked, tmp_path):
    out, uri, client, _, summary = tracked
    # A two-seed folder from the one run: seed-0 and seed-1 (its mean accuracy changed).
    top = tmp_path / "seeds"
    summaries = []
    for seed, accuracy in ((0, summary["mean"]["accuracy"]), (1, 0.5)):
        shutil.copytree(out, top / f"seed-{seed}")
        s = {**summary, "seed": seed, "mean": {**summary["mean"], "accuracy": accuracy}}
        (top / f"seed-{seed}" / "summary.json").write_text(json.dumps(s))
        summaries.append(s)
    (top / "seeds.json").write_text(json.dumps(summaries))
    for name in ("scenario.toml", "scenario.json", "report.md"):
        shutil.copy(out / name, top / name)

    done = tracking.track_folder(tracking.open_store(uri), top, "two-seeds")
    parent_id, *child_ids = done.run_ids
    assert len(child_ids) == 2
    children = [client.get_run(r) for r in child_ids]
    assert [c.data.tags["mlflow.parentRunId"] for c in children] == [parent_id] * 2
    assert [c.data.tags["medswarm.seed"] for c in children] == ["0", "1"]
    assert children[1].data.metrics["summary.mean_accuracy"] == 0.5
    parent = client.get_run(parent_id)
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags["medswarm.seeds"] == "0,1"
    assert parent.data.metrics["summary.mean_accuracy"] == pytest.approx(
        (summary["mean"]["accuracy"] + 0.5) / 2
    )
    assert parent.data.params["rounds"] == str(ROUNDS)
    assert {"seeds.json", "scenario.toml", "report.md"} <= set(artifacts(client, parent_id))
