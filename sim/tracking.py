"""Experiment tracking: a finished run folder logged to MLflow (`sim run --mlflow`, `sim track`).

Everything is read from the run folder after the run, so logging a run as it ends and logging an
old one later are the same code. The experiment is the scenario's name (or one the caller
names); each seed is one MLflow run, nested under a parent run when the scenario has several.
A run gets the scenario's settings as parameters (`scenario.json`, flattened), per round and
per node the merged model's accuracy, AUC and loss, the training loss, bytes and seconds
(`accuracy.<node>`, ..., step = round) and their mean over the honest nodes
(`mean.accuracy`, ...), the summary's final numbers (`summary.*`), and as artifacts only the
files named here (never a node's key files): summary, consensus, report, plots, the scenario
and each node's `metrics.jsonl`.

MLflow is an optional extra (`pip install 'medswarm[mlflow]'`), imported only here and only
when tracking is asked for.
"""

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import SimError

INSTALL = "pip install 'medswarm[mlflow]'"
# Without a URI: MLflow's own $MLFLOW_TRACKING_URI, else a local store in ./mlruns. A SQLite
# file, not MLflow's file store: MLflow 3 keeps the file store ("./mlruns") in maintenance mode
# and refuses to open one unless MLFLOW_ALLOW_FILE_STORE=true, while SQLite needs no server
# and works with mlflow-skinny plus SQLAlchemy and Alembic (the extra).
DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
URI_ENV = "MLFLOW_TRACKING_URI"

# Per round, from each node's metrics.jsonl record: metric name -> where it is in the record.
ROUND_METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("merged", "accuracy"),
    "auc": ("merged", "auc"),
    "loss": ("merged", "loss"),
    "train_loss": ("train_loss",),
    "test_accuracy": ("test", "accuracy"),
    "test_auc": ("test", "auc"),
    "epsilon": ("privacy", "epsilon"),
    "bytes_sent": ("bytes_sent",),
    "bytes_received": ("bytes_received",),
    "round_seconds": ("round_seconds",),
}
# Per node, from summary.json's `nodes`: logged as summary.<key>.<node>.
NODE_FINALS = ("accuracy", "auc", "contribution", "reward_eth", "rounds_to_target", "bytes_sent")
# The files a run's folder gives as artifacts (its top level); nothing else is ever logged.
RUN_FILES = (
    "summary.json",
    "consensus.json",
    "report.html",
    "report.md",
    "docker.json",
    "ray.json",
)
SCENARIO_FILES = ("scenario.toml", "scenario.json")  # at the top of the run folder
SEEDS_FILE = "seeds.json"  # several seeds: the top of the run folder, with seed-<n>/


class TrackingError(SimError):
    """MLflow is missing, its store cannot be used, or the folder is no finished run."""


@dataclass(frozen=True)
class Store:
    """An MLflow tracking store, opened and checked."""

    uri: str
    client: Any  # mlflow.MlflowClient
    entities: Any  # mlflow.entities: Metric, Param, RunTag


@dataclass(frozen=True)
class Tracked:
    """What a run folder became: its experiment, and its runs (parent first with seeds)."""

    experiment: str
    experiment_id: str
    run_ids: list[str]


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get(URI_ENV) or DEFAULT_URI


def open_store(uri: str | None = None) -> Store:
    """Import MLflow and open the store at `uri` (see `resolve_uri`), checking that it answers:
    done before a run starts, so a missing extra or a bad URI fails at once."""
    uri = resolve_uri(uri)
    # MLflow 3 sends usage telemetry unless told not to; a hospital's research machine should
    # not talk to a third party because a run was tracked (set it to false to allow it).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow.entities
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise TrackingError(f"--mlflow needs MLflow ({exc}); install it with: {INSTALL}") from None
    _quiet(["mlflow", "alembic"])
    if uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError as exc:
            raise TrackingError(
                f"an MLflow SQLite store needs SQLAlchemy and Alembic ({exc}); "
                f"install them with: {INSTALL}"
            ) from None
        database = _sqlite_file(uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri}: {exc.message}") from None
    return Store(uri=uri, client=client, entities=mlflow.entities)


def track_folder(store: Store, folder: Path, experiment: str | None = None) -> Tracked:
    """Log the finished run in `folder` (one seed, or several: seeds.json and seed-<n>/) to
    `store`, into `experiment` (default: the scenario's name)."""
    from mlflow.exceptions import MlflowException

    seeds = _seed_folders(folder)
    first = _read_json(seeds[0] / "summary.json")
    name = experiment or first["scenario"]
    params = _params(folder)
    try:
        experiment_id = _experiment(store, name)
        if len(seeds) == 1:
            run_id = _log_seed(store, experiment_id, seeds[0], params, folder, parent=None)
            return Tracked(name, experiment_id, [run_id])
        parent = _log_parent(store, experiment_id, folder, params)
        children = [_log_seed(store, experiment_id, f, params, None, parent) for f in seeds]
        return Tracked(name, experiment_id, [parent, *children])
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {store.uri}: {exc.message}") from None


# -- the run folder ---------------------------------------------------------------------------


def _seed_folders(folder: Path) -> list[Path]:
    if (folder / SEEDS_FILE).is_file():
        seeds = [s["seed"] for s in _read_json(folder / SEEDS_FILE)]
        found = [folder / f"seed-{s}" for s in seeds]
    else:
        found = [folder]
    for f in found:
        if not (f / "summary.json").is_file():
            raise TrackingError(f"{f}: no summary.json; not a finished run folder")
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrackingError(f"{path}: {exc}") from None


def _params(folder: Path) -> dict[str, str]:
    """The scenario's settings as run (`scenario.json`, written by `sim run`), flattened to
    dotted keys; an older run folder without it has none."""
    path = folder / "scenario.json"
    return dict(_flatten(_read_json(path))) if path.is_file() else {}


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):  # faults, attacks: one key per entry's setting
            yield from _flatten(v, f"{prefix}.{i}")
    else:
        yield prefix, value if isinstance(value, str) else json.dumps(value)


def _records(folder: Path, node: str) -> list[dict[str, Any]]:
    path = folder / "nodes" / node / "out" / "metrics.jsonl"
    if not path.is_file():
        return []
    from node.metrics import read_records

    return read_records(path)


def _number(record: Mapping[str, Any], where: Sequence[str]) -> float | None:
    value: Any = record
    for key in where:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# -- what a run logs ----------------------------------------------------------------------------


def _log_seed(
    store: Store,
    experiment_id: str,
    folder: Path,
    params: dict[str, str],
    scenario_folder: Path | None,
    parent: str | None,
) -> str:
    """One seed's run: params, per-round and final metrics, tags, artifacts."""
    summary = _read_json(folder / "summary.json")
    nodes = summary["nodes"]
    records = {n: _records(folder, n) for n in nodes}
    times = [r["time"] for rs in records.values() for r in rs if "time" in r]
    tags = {
        "medswarm.scenario": summary["scenario"],
        "medswarm.seed": str(summary["seed"]),
        "medswarm.backend": summary["backend"],
        "medswarm.version": _version(),
        "medswarm.run_folder": str(folder.resolve()),
    }
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    name = summary["scenario"] if parent is None else f"seed {summary['seed']}"
    # The run's span: from the nodes' start (timing: when they finished, less how long they
    # ran) or else the first round, to the last round.
    timing = summary.get("timing") or {}
    finished, took = timing.get("swarm_finished_at"), timing.get("swarm_seconds")
    started = finished - took if finished and took else min(times, default=None)
    ended = max(times, default=finished)
    run_id = _create_run(store, experiment_id, name, tags, started)
    honest = [n for n, v in nodes.items() if v.get("honest", True)]
    metrics = [*_round_metrics(store, records, honest), *_final_metrics(store, [summary], ended)]
    _log(store, run_id, params, metrics)
    files = [folder / f for f in RUN_FILES] + sorted(folder.glob("*.png"))
    if scenario_folder is not None:
        files += [scenario_folder / f for f in SCENARIO_FILES]
    _artifacts(store, run_id, files)
    for n in nodes:
        node_metrics = folder / "nodes" / n / "out" / "metrics.jsonl"
        _artifacts(store, run_id, [node_metrics], f"nodes/{n}")
    store.client.set_terminated(run_id, end_time=_ms(ended) if ended else None)
    return run_id


def _log_parent(store: Store, experiment_id: str, folder: Path, params: dict[str, str]) -> str:
    """Several seeds' parent run: params, the final numbers' mean over the seeds, the report
    over the seeds and the scenario."""
    summaries = _read_json(folder / SEEDS_FILE)
    first = summaries[0]
    tags = {
        "medswarm.scenario": first["scenario"],
        "medswarm.seeds": ",".join(str(s["seed"]) for s in summaries),
        "medswarm.backend": first["backend"],
        "medswarm.version": _version(),
        "medswarm.run_folder": str(folder.resolve()),
    }
    run_id = _create_run(store, experiment_id, first["scenario"], tags, None)
    _log(store, run_id, params, list(_final_metrics(store, summaries, None)))
    files = [folder / f for f in (*RUN_FILES, SEEDS_FILE, *SCENARIO_FILES)]
    _artifacts(store, run_id, files + sorted(folder.glob("*.png")))
    store.client.set_terminated(run_id)
    return run_id


def _round_metrics(
    store: Store, records: Mapping[str, list[dict[str, Any]]], honest: Sequence[str]
) -> Iterator[Any]:
    """Per node and round (`accuracy.<node>`, step = round), and per round the mean over the
    honest nodes that recorded it (`mean.accuracy`)."""
    Metric = store.entities.Metric
    by_round: dict[tuple[str, int], list[float]] = {}
    last_time: dict[int, int] = {}
    for node, rs in records.items():
        for r in rs:
            step, at = int(r["round"]), _ms(r.get("time"))
            last_time[step] = max(last_time.get(step, 0), at)
            for name, where in ROUND_METRICS.items():
                value = _number(r, where)
                if value is None:
                    continue
                yield Metric(f"{name}.{node}", value, at, step)
                if node in honest:
                    by_round.setdefault((name, step), []).append(value)
    for (name, step), values in sorted(by_round.items()):
        yield Metric(f"mean.{name}", sum(values) / len(values), last_time[step], step)


def _final_metrics(
    store: Store, summaries: Sequence[Mapping[str, Any]], ended: float | None
) -> Iterator[Any]:
    """The summary's final numbers (`summary.*`); over several seeds, their mean."""
    Metric = store.entities.Metric
    values: dict[str, list[float]] = {}
    for summary in summaries:
        for key, value in _finals(summary):
            values.setdefault(key, []).append(value)
    at = _ms(ended)
    for key, vs in values.items():
        yield Metric(key, sum(vs) / len(vs), at, 0)


def _finals(summary: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    found: list[tuple[str, Sequence[str]]] = [
        ("summary.mean_accuracy", ("mean", "accuracy")),
        ("summary.mean_auc", ("mean", "auc")),
        ("summary.wall_seconds", ("wall_seconds",)),
        ("summary.rounds_wall_seconds", ("rounds_wall_seconds",)),
        ("summary.whole_seconds", ("timing", "whole_seconds")),
        ("summary.peak_rss_mb_total", ("peak_rss_mb_total",)),
        ("summary.test.mean_accuracy", ("test", "mean", "accuracy")),
        ("summary.test.mean_auc", ("test", "mean", "auc")),
        ("summary.test.consensus_accuracy", ("test", "consensus", "accuracy")),
        ("summary.test.consensus_auc", ("test", "consensus", "auc")),
    ]
    for baseline in summary.get("baselines") or {}:
        for k in ("mean_accuracy", "mean_auc", "wall_seconds"):
            found.append((f"summary.{baseline}.{k}", ("baselines", baseline, k)))
    for node in summary["nodes"]:
        for k in NODE_FINALS:
            found.append((f"summary.{k}.{node}", ("nodes", node, k)))
    for key, where in found:
        value = _number(summary, where)
        if value is not None:
            yield key, value


# -- MLflow -------------------------------------------------------------------------------------


def _experiment(store: Store, name: str) -> str:
    """The experiment's id, created if new; in a SQLite store, its artifacts go beside the
    database file (MLflow would put them under the current directory's ./mlruns)."""
    found = store.client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted in {store.uri}: restore it "
                "(mlflow experiments restore) or name another with --mlflow-experiment"
            )
        return str(found.experiment_id)
    database = _sqlite_file(store.uri)
    location = (database.parent / "artifacts").as_uri() if database is not None else None
    return str(store.client.create_experiment(name, artifact_location=location))


def _create_run(
    store: Store, experiment_id: str, name: str, tags: dict[str, str], start: float | None
) -> str:
    run = store.client.create_run(
        experiment_id, start_time=_ms(start) if start else None, tags=tags, run_name=name
    )
    return str(run.info.run_id)


def _log(store: Store, run_id: str, params: Mapping[str, str], metrics: list[Any]) -> None:
    """Batched, within MLflow's limits per request (and its key and value lengths)."""
    from mlflow.utils import validation as limits

    key_max = limits.MAX_ENTITY_KEY_LENGTH
    value_max = limits.MAX_PARAM_VAL_LENGTH
    Param = store.entities.Param
    logged = [
        Param(k[:key_max], v if len(v) <= value_max else v[: value_max - 3] + "...")
        for k, v in params.items()
    ]
    for chunk in _chunks(logged, limits.MAX_PARAMS_TAGS_PER_BATCH):
        store.client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, limits.MAX_METRICS_PER_BATCH):
        store.client.log_batch(run_id, metrics=chunk)


def _artifacts(store: Store, run_id: str, files: Iterable[Path], under: str | None = None) -> None:
    for path in files:
        if path.is_file():
            store.client.log_artifact(run_id, str(path), under)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URI."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix) :].split("?", 1)[0]).resolve()


def _ms(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1000)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medswarm")
    except PackageNotFoundError:
        return "unknown"


def _quiet(loggers: Sequence[str]) -> None:
    """MLflow's and Alembic's INFO lines (creating the tables...) only at the caller's level."""
    level = logging.getLogger().getEffectiveLevel()
    for name in loggers:
        logging.getLogger(name).setLevel(level)
