"""sim.tracking without a run: MLflow missing fails before a run starts, with the install
command; settings flattened to params within MLflow's limits."""

import sys

import pytest
from typer.testing import CliRunner

from medswarm.cli import app
from sim import tracking


def words(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal's width


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One SQLite store for the module (a new one runs MLflow's migrations: seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    tracking.open_store(uri)
    return uri


@pytest.fixture
def no_run(monkeypatch):
    """run_scenario replaced by one that records being called (and the log level the command
    exports for its nodes restored after)."""
    import sim.run
    from gossip.logs import LOG_LEVEL_ENV

    monkeypatch.setenv(LOG_LEVEL_ENV, "WARNING")

    calls = []
    monkeypatch.setattr(sim.run, "run_scenario", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.mark.parametrize("flags", [["--mlflow"], ["--mlflow", "sqlite:///x/mlflow.db"]])
def test_without_mlflow_the_run_does_not_start_and_says_how_to_install_it(
    monkeypatch, tmp_path, no_run, flags
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('name = "x"\n')
    result = CliRunner().invoke(
        app, ["sim", "run", str(scenario), "--out", str(tmp_path / "out"), *flags]
    )
    assert result.exit_code == 2, result.output
    assert "pip install 'medswarm[mlflow]'" in words(result.output)
    assert no_run == []
    assert not (tmp_path / "out").exists()


def test_without_the_flag_mlflow_is_not_needed(monkeypatch, tmp_path, no_run):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('name = "x"\n')
    result = CliRunner().invoke(app, ["sim", "run", str(scenario), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(no_run) == 1


def test_sim_track_without_mlflow_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = CliRunner().invoke(app, ["sim", "track", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'medswarm[mlflow]'" in words(result.output)


def test_a_sqlite_store_without_sqlalchemy_says_how_to_install_it(monkeypatch, tmp_path, store_uri):
    # `store_uri` first: MLflow registers its SQLite stores when it is first imported, and
    # without SQLAlchemy then it would never serve one in this process (the later tests).
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(tracking.TrackingError, match=r"pip install 'medswarm\[mlflow\]'"):
        tracking.open_store(f"sqlite:///{tmp_path}/mlflow.db")


def test_sim_track_refuses_a_folder_that_holds_no_finished_run(tmp_path, store_uri):
    args = ["sim", "track", str(tmp_path / "run"), "--mlflow", store_uri]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "no summary.json; not a finished run folder" in words(result.output)


def test_settings_flatten_to_dotted_keys_one_per_fault_and_lists_as_json():
    settings = {
        "name": "s",
        "rounds": 3,
        "data": {"sites": {"a": "/a.csv"}, "alpha": None},
        "seeds": [0, 1],
        "faults": [{"kind": "kill", "node": "a", "at": 2}],
        "attacks": [],
    }
    assert dict(tracking._flatten(settings)) == {
        "name": "s",
        "rounds": "3",
        "data.sites.a": "/a.csv",
        "data.alpha": "null",
        "seeds": "[0, 1]",
        "faults.0.kind": "kill",
        "faults.0.node": "a",
        "faults.0.at": "2",
        "attacks": "[]",
    }


def test_params_longer_than_mlflow_takes_are_cut_and_marked(store_uri):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    store = tracking.open_store(store_uri)
    experiment = tracking._experiment(store, "limits")
    run = tracking._create_run(store, experiment, "r", {}, None)
    params = {f"p{i}": str(i) for i in range(250)} | {"long": "x" * (MAX_PARAM_VAL_LENGTH + 10)}
    tracking._log(store, run, params, [])  # more params than one batch takes
    logged = store.client.get_run(run).data.params
    assert len(logged) == 251 and logged["p249"] == "249"
    assert len(logged["long"]) == MAX_PARAM_VAL_LENGTH and logged["long"].endswith("...")
    # The experiment's artifacts sit beside the database, not under the current directory.
    location = store.client.get_experiment(experiment).artifact_location
    database = tracking._sqlite_file(store_uri)
    assert database is not None and location == (database.parent / "artifacts").as_uri()
