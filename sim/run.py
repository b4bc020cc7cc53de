"""`medswarm sim run`: a scenario, one run folder per seed, then the report.

A run folder holds the partitioned data (`data/`), one folder per node (config, keys, outputs,
written by `sim.local_swarm.init_swarm`), the consortium chain if any (`chain/`), `summary.json`
and the report. Nodes are driven only through their CLI and config files: attacks and faults
are settings in each node's `node.toml`, kills, restarts and pauses are done to its process (or
its container: on the docker backend partitions are real too, see `sim.docker_backend`; or its
Ray actor, see `sim.ray_backend`).
"""

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from gossip.identity import load_key_file, peer_id_of
from node.config import load_config
from node.dataset import PARQUET_SUFFIXES, DataSchema, load_schema, load_table, load_test_set
from node.init import with_settings
from node.metrics import ANALYTICS_PROGRESS, last_record, read_records
from sim import partition, synthetic, topology
from sim.backends import InprocNodes, Nodes, ProcessNodes, failed_at_start
from sim.consensus import consensus_distance
from sim.errors import AlreadyExists
from sim.local_swarm import SwarmError, init_swarm, load_manifest, rotation_settings
from sim.memory import MemoryPeak, own_peak_rss_mb
from sim.pool import spawn_workers, stop_unused, worker_pool
from sim.run_folder import RUN_INFO, holds_a_run, in_effect
from sim.scenario import (
    BACKENDS,
    AlieAttack,
    Attack,
    BaselinesSection,
    FreeRider,
    IpmAttack,
    LabelFlip,
    NoiseAttack,
    PauseFault,
    PrivacyScenario,
    Scenario,
    ScenarioError,
    SignFlip,
    Sybil,
    backend_problems,
    load_scenario,
    private_nodes,
)

# Imported where used (torch, web3, matplotlib: hundreds of MB): the simulator stays small
# while the nodes run, which matters when they share its machine.
if TYPE_CHECKING:
    import pyarrow as pa

    from ledger.backends import Chain
    from node.baselines import Recipe
    from sim.consortium import ConsortiumPlan
    from sim.docker_backend import Cut, Links

WEI_PER_ETH = 10**18
RUN_TIMEOUT = 3600.0  # seconds: a run that takes longer is stuck
MAX_PROGRESS_ROWS = 40  # nodes shown one per row in the progress display; more: a summary


@dataclass
class Plan:
    """One seed's run: which node holds which file, who misbehaves, what happens when."""

    seed: int
    files: dict[str, Path]
    honest: list[str]
    schema: Path  # the data schema: the scenario's, or the generated records'
    test_file: Path | None = None  # the common test set (data.test_file, or data.test_fraction)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    kills: list[Any] = field(default_factory=list)
    pauses: list[PauseFault] = field(default_factory=list)
    fault_windows: list[dict[str, Any]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)
    memory: MemoryPeak = field(default_factory=MemoryPeak)  # this process and all under it
    # inproc with `workers`: the worker processes, started with the run (sim/pool.py)
    workers: list["subprocess.Popen[bytes]"] = field(default_factory=list)


def run_scenario(
    path: Path | Scenario,
    out: Path,
    console: Console,
    replace: bool = False,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    """Run every seed of the scenario at `path` (or already loaded) into `out`; with `replace`,
    an earlier run there is removed first (otherwise it is refused). `backend` overrides the
    scenario's."""
    scenario = path if isinstance(path, Scenario) else load_scenario(path)
    if backend is not None:
        scenario = with_backend(scenario, backend)
    if replace:
        remove_earlier_run(out, console)
    try:
        source = scenario.source.read_text()  # as it is now: the run reads it no more
    except OSError:
        source = None
    summaries = []
    for seed in scenario.seeds:
        folder = out if len(scenario.seeds) == 1 else out / f"seed-{seed}"
        console.rule(f"{scenario.name}: seed {seed}")
        summaries.append(run_seed(scenario, seed, folder, console))
    if len(summaries) > 1:
        (out / "seeds.json").write_text(json.dumps(summaries, indent=1))
        _report(out, summaries[-1], out / f"seed-{scenario.seeds[-1]}", summaries)
    _keep_scenario(out, scenario, source)
    return summaries


def _keep_scenario(out: Path, scenario: Scenario, source: str | None) -> None:
    """The scenario at the top of the run folder, as written (`scenario.toml`, when its file
    could be read) and as run, every default filled in and the backend override applied
    (`scenario.json`): what `sim track` logs as the run's parameters."""
    if source is not None:
        (out / "scenario.toml").write_text(source)
    settings = {"source": str(scenario.source), **scenario.model_dump(mode="json")}
    (out / "scenario.json").write_text(json.dumps(settings, indent=1))


def _chain_plan(scenario: Scenario) -> "ConsortiumPlan":
    from sim.consortium import ConsortiumPlan

    return ConsortiumPlan(
        rounds_per_epoch=scenario.chain.rounds_per_epoch,
        reward_per_epoch_wei=int(scenario.chain.reward_per_epoch_eth * WEI_PER_ETH),
        pool_wei=int(scenario.chain.pool_eth * WEI_PER_ETH),
        max_epsilon=scenario.chain.max_epsilon,
    )


def with_backend(scenario: Scenario, backend: str) -> Scenario:
    if backend not in BACKENDS:
        raise ScenarioError(f"unknown backend {backend!r}: expected {' | '.join(BACKENDS)}")
    changed = scenario.model_copy(update={"backend": backend})
    if problems := backend_problems(changed):
        raise ScenarioError("\n  ".join([f"{scenario.source}: invalid scenario", *problems]))
    return changed


def remove_earlier_run(out: Path, console: Console) -> None:
    """Delete the run in `out`, if it holds one (and nothing else)."""
    if holds_a_run(out):
        console.print(f"replacing the earlier run in {out}")
        shutil.rmtree(out)


def run_seed(scenario: Scenario, seed: int, folder: Path, console: Console) -> dict[str, Any]:
    if (folder / "swarm.json").exists():
        raise AlreadyExists(f"{folder} already holds a run; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    # inproc's worker processes first, so that their imports overlap the data's preparation
    # and the nodes' set-up.
    shared = scenario.backend == "inproc" and scenario.workers > 1
    count = min(scenario.workers, len(scenario.node_names())) - 1 if shared else 0
    workers = spawn_workers(folder, count)
    try:
        return _run_seed(scenario, seed, folder, console, began, workers)
    finally:
        stop_unused(workers)  # those a failure left unused; the pool has waited for the rest


def _run_seed(
    scenario: Scenario,
    seed: int,
    folder: Path,
    console: Console,
    began: float,
    workers: list["subprocess.Popen[bytes]"],
) -> dict[str, Any]:
    plan = make_plan(scenario, seed, folder / "data")
    plan.workers = workers
    data_seconds = time.perf_counter() - began
    names = list(plan.files)
    nbrs = topology.neighbours(
        scenario.topology.kind,
        len(names),
        degree=scenario.topology.degree,
        seed=seed,
        edges=[tuple(e) for e in scenario.topology.edges] if scenario.topology.edges else None,
    )
    if scenario.topology.schedule == "matchings":
        for name, settings in rotation_settings(nbrs, names, seed).items():
            plan.settings[name].update(settings)
    write_run_info(folder, scenario, plan)

    def set_up(chain: "Chain | None" = None, ledger: "ConsortiumPlan | None" = None) -> None:
        init_swarm(
            folder,
            plan.files,
            plan.schema,
            rounds=scenario.rounds,
            topology=nbrs,
            model=scenario.model.name,
            extra=plan.settings,
            ledger=ledger,
            chain=chain,
        )
        if scenario.backend != "docker":  # there the network itself is cut
            _apply_partitions(scenario, folder, names)

    settled, failure = None, None
    try:
        wall, settled = _swarm(folder, scenario, plan, console, set_up)
    except (SwarmError, ExceptionGroup) as exc:
        # A query that stopped (a node down, a refusal) is a result: each node says why. (The
        # inproc backend's nursery wraps the error in a group.)
        swarm_errors, others = (
            exc.split(SwarmError) if isinstance(exc, ExceptionGroup) else (exc, None)
        )
        if scenario.analytics is None or swarm_errors is None or others is not None:
            raise
        wall, failure = time.perf_counter() - began, str(swarm_errors)
    if scenario.analytics is not None:
        return _analytics_result(folder, scenario, plan, console, began, wall, failure)
    # The whole run up to here: data (generation, split), set-up, chain and every round; not the
    # baselines, the settlement's audit files or the report that follow.
    timing = {
        "data_seconds": data_seconds,
        "swarm_seconds": wall,
        "whole_seconds": time.perf_counter() - began,
        "swarm_finished_at": time.time(),  # epoch seconds, for a parent that timed the start
    }
    summary = collect(folder, scenario, plan, wall, settled, timing)
    if scenario.privacy is not None and scenario.privacy.compare_without_dp:
        _compare_without_dp(scenario, seed, folder, summary, console)
    if scenario.baselines.shared_swarm:
        _compare_shared(scenario, plan, folder, summary, console)
    _report(folder, summary, folder, None)
    from sim.report import console_summary

    console.print()  # the progress display leaves its last line open
    for part in console_summary(summary):
        console.print(part)
    console.print(f"report: {folder / 'report.html'} (and report.md)")
    return summary


def write_run_info(folder: Path, scenario: Scenario, plan: Plan) -> None:
    """`run.json`: what this seed's run will be (its nodes, rounds, faults and attacks), written
    before the nodes start, for whoever follows the run live (`medswarm dashboard`). No keys."""
    info = {
        "scenario": scenario.name,
        "seed": plan.seed,
        "backend": scenario.backend,
        "rounds": scenario.rounds,
        "nodes": list(plan.files),
        "honest": plan.honest,
        "chain": scenario.chain.backend,
        "analytics": scenario.analytics is not None,
        "faults": plan.faults,
        "attacks": plan.attacks,
        "fault_windows": plan.fault_windows,
        "started": time.time(),
    }
    (folder / RUN_INFO).write_text(json.dumps(info, indent=1))


def _swarm(
    folder: Path,
    scenario: Scenario,
    plan: Plan,
    console: Console,
    set_up: Callable[..., None],
) -> tuple[float, dict[str, Any] | None]:
    """Set the swarm up and run it on the scenario's backend: (its wall-clock, the ledger's
    settlement when there is a chain)."""
    settled = None
    if scenario.backend == "docker":
        chain_plan = _chain_plan(scenario)
        wall, settled = run_in_docker(folder, scenario, plan, console, set_up, chain_plan)
    elif scenario.chain.backend == "none":
        set_up()
        wall = execute(folder, scenario, plan, console, None)
    else:
        from sim.consortium import open_chain, settle

        # One live chain from deployment to settlement: only Anvil could be saved and reopened.
        with open_chain(folder, scenario.chain.backend) as chain:
            set_up(chain, _chain_plan(scenario))
            wall = execute(folder, scenario, plan, console, chain.url)
            settled = settle(folder, chain, load_manifest(folder))
    return wall, settled


def _analytics_result(
    folder: Path,
    scenario: Scenario,
    plan: Plan,
    console: Console,
    began: float,
    wall: float,
    failure: str | None,
) -> dict[str, Any]:
    from sim.analytics import collect_analytics, console_lines, write_analytics_report

    summary = collect_analytics(
        folder, list(plan.files), scenario.name, plan.seed, scenario.backend,
        wall_seconds=wall, whole_seconds=time.perf_counter() - began, failure=failure,
        faults=plan.faults,
    )  # fmt: skip
    write_analytics_report(folder, summary)
    console.print()
    for part in console_lines(summary):
        console.print(part)
    console.print(f"report: {folder / 'report.html'} (and report.md)")
    return summary


def without_dp(scenario: Scenario) -> Scenario:
    """The scenario with no DP-SGD (and no consortium maximum, which needs it): the "DP off"
    side of the privacy audit. Secure aggregation, which changes no model, is dropped too."""
    assert scenario.privacy is not None
    privacy = PrivacyScenario(audit=True)
    chain = scenario.chain.model_copy(update={"max_epsilon": None})
    return scenario.model_copy(update={"privacy": privacy, "chain": chain})


def _compare_without_dp(
    scenario: Scenario, seed: int, folder: Path, summary: dict[str, Any], console: Console
) -> None:
    """Run the seed again without DP-SGD (into `without-dp/`), for the report's "DP off"."""
    console.rule(f"{scenario.name}: seed {seed}, the same without DP-SGD")
    plain = run_seed(without_dp(scenario), seed, folder / "without-dp", console)
    summary["privacy"]["without_dp"] = _without_dp_rows(plain)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))


def _without_dp_rows(plain: dict[str, Any]) -> dict[str, Any]:
    rows = plain["privacy"]["nodes"]
    return {
        "mean_accuracy": plain["mean"]["accuracy"],
        "mean_auc": plain["mean"]["auc"],
        "mean_mia_auc": plain["privacy"]["mean_mia_auc"],
        "mean_mia_auc_calibrated": plain["privacy"]["mean_mia_auc_calibrated"],
        "nodes": {
            n: {k: r[k] for k in ("accuracy", "mia_auc", "mia_auc_calibrated")}
            for n, r in rows.items()
        },
    }


def shared_swarm(scenario: Scenario) -> Scenario:
    """The scenario with every parameter shared (no personalization) and no baselines (the
    personalized run has them): the swarm a personalized one is compared with."""
    swarm = scenario.swarm.model_copy(update={"personalize": "none"})
    return scenario.model_copy(update={"swarm": swarm, "baselines": BaselinesSection()})


def _compare_shared(
    scenario: Scenario, plan: Plan, folder: Path, summary: dict[str, Any], console: Console
) -> None:
    """Run the seed again sharing every parameter (into `shared-swarm/`) and score its models
    at every site, for the report's heterogeneity table."""
    from sim.heterogeneity import site_scores, swarm_matrix

    console.rule(f"{scenario.name}: seed {plan.seed}, the same swarm sharing every parameter")
    run_seed(shared_swarm(scenario), plan.seed, folder / "shared-swarm", console)
    matrix = swarm_matrix(
        folder / "shared-swarm", plan.honest, plan.files, plan.schema, _recipe(scenario, plan)
    )
    summary["heterogeneity"]["swarm"] = site_scores(matrix)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))


# -- the plan -------------------------------------------------------------------------------


def make_plan(scenario: Scenario, seed: int, data_dir: Path) -> Plan:
    files, schema, test_file = _partition(scenario, seed, data_dir)
    plan = Plan(seed=seed, files=files, honest=list(files), schema=schema, test_file=test_file)
    common = {
        **{f"model.{k}": v for k, v in scenario.model.model_dump().items() if k != "init_seed"},
        **{f"training.{k}": v for k, v in scenario.training.model_dump().items()},
        **{f"swarm.{k}": v for k, v in scenario.swarm.model_dump().items()},
        **{f"timeouts.{k}": v for k, v in scenario.timeouts.model_dump().items()},
        **{f"evaluation.{k}": v for k, v in scenario.evaluation.model_dump().items()},
        "swarm.rounds": scenario.rounds,
        "training.seed": seed,
        "model.init_seed": seed,
        "data.split_seed": seed,
        "data.validation_fraction": scenario.data.validation_fraction,
        "node.keep_models": True,  # for the consensus-distance plot
        # A simulated kill is a process kill, which the page cache survives; and the nodes
        # share one disk here, where each hospital has its own.
        "node.fsync": False,
        "node.evaluate_local": False,  # nobody reads it: the report plots merged accuracy
    }
    if test_file is not None:
        common["data.test_path"] = str(test_file)
    if scenario.analytics is not None:
        common["analytics"] = scenario.analytics.model_dump(exclude_none=True)
    if scenario.data.reference_scaling:
        common["data.scaling"] = str(_reference_scaling(plan, data_dir))
    colluding = scenario.colluding_groups()
    for attack in scenario.attacks:
        if isinstance(attack, Sybil):
            twin = f"{attack.node}_sybil"
            plan.files[twin] = plan.files[attack.node]
            plan.attacks.append(f"{twin}: a second identity with {attack.node}'s records")
            continue
        plan.honest.remove(attack.node)
        settings, text = _attack_settings(attack)
        if isinstance(attack, AlieAttack) and attack.group is not None:
            members = colluding[attack.group]
            settings |= {  # the folder is the simulator's stand-in for the group's side channel
                "adversary.group_dir": str(data_dir.parent / "collusion" / attack.group),
                "adversary.group_size": len(members),
                "adversary.alie_f": len(members),
            }
            text += f", colluding with {', '.join(m for m in members if m != attack.node)}"
        plan.settings.setdefault(attack.node, {}).update(settings)
        plan.attacks.append(f"{attack.node}: {text}")
    for fault in scenario.faults:
        if fault.kind == "kill":
            plan.kills.append(fault)
            plan.settings.setdefault(fault.node, {})["faults.hold_after_round"] = fault.at
            back = f", restarted at round {fault.restart}" if fault.restart else ""
            plan.faults.append(f"{fault.node}: killed at round {fault.at}{back}")
            to = fault.restart or scenario.rounds
            plan.fault_windows.append({"label": f"{fault.node} down", "from": fault.at, "to": to})
        elif fault.kind == "pause":
            plan.pauses.append(fault)
            span = (fault.from_round, fault.to_round)
            plan.faults.append(f"{fault.node}: frozen in rounds {span[0]}-{span[1]}")
            plan.fault_windows.append(
                {"label": f"{fault.node} frozen", "from": span[0], "to": span[1]}
            )
        elif fault.kind == "slow":
            plan.settings.setdefault(fault.node, {})["faults.publish_delay_seconds"] = (
                fault.delay_seconds
            )
            plan.faults.append(f"{fault.node}: {fault.delay_seconds:g}s late every round")
        elif fault.kind == "partition":
            groups = " | ".join(", ".join(g) for g in fault.groups)
            span = (fault.from_round, fault.to_round)
            plan.faults.append(f"partition {groups} in rounds {span[0]}-{span[1]}")
            plan.fault_windows.append({"label": "partition", "from": span[0], "to": span[1]})
    _privacy_settings(scenario, plan)
    plan.settings = {n: {**common, **plan.settings.get(n, {})} for n in plan.files}
    return plan


def _reference_scaling(plan: Plan, data_dir: Path) -> Path:
    """The pooled mean and std of every node's cleaned records, as scaling.json."""
    from node.baselines import pooled_scaler, site_stats

    schema = load_schema(plan.schema)
    stats = [site_stats(load_table(path, schema).features) for path in plan.files.values()]
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "scaling.json"
    path.write_text(json.dumps(pooled_scaler(stats).to_dict()))
    return path


def _privacy_settings(scenario: Scenario, plan: Plan) -> None:
    """The scenario's [privacy] into the nodes' settings: DP-SGD for its nodes, the rest for
    all. A simulation repeats with its seed, DP-SGD's noise too (never so in production)."""
    if scenario.privacy is None:
        return
    private = set(private_nodes(scenario, list(plan.files)))
    for n in plan.files:
        settings = scenario.privacy.node_settings(n in private)
        if n in private and scenario.privacy.dp:
            settings["privacy.seeded_noise"] = True
        plan.settings.setdefault(n, {}).update(settings)


def _attack_settings(attack: Attack) -> tuple[dict[str, Any], str]:
    """The node settings that make a node behave like `attack`, and a description."""
    match attack:
        case LabelFlip():
            return {
                "adversary.label_flip": attack.fraction
            }, f"flips {attack.fraction:.0%} of labels"
        case NoiseAttack():
            return {
                "adversary.update_noise_std": attack.std
            }, f"adds N(0, {attack.std:g}) to updates"
        case SignFlip():
            return {"adversary.sign_flip": True}, "negates its updates"
        case FreeRider():
            settings = {"adversary.mode": attack.mode, "adversary.noise_std": attack.std}
            return settings, f"free rider ({attack.mode}): never trains"
        case AlieAttack():
            z = "z_max" if attack.z is None else f"z = {attack.z:g}"
            alie: dict[str, Any] = {"adversary.mode": "alie"}
            if attack.z is not None:
                alie["adversary.alie_z"] = attack.z
            return alie, f"ALIE: publishes mean - {z} std of the models it received"
        case IpmAttack():
            return {"adversary.mode": "ipm", "adversary.ipm_epsilon": attack.epsilon}, (
                f"IPM: publishes -{attack.epsilon:g} times the mean update it received"
            )
    raise ValueError(f"unknown attack {attack!r}")


def _partition(
    scenario: Scenario, seed: int, data_dir: Path
) -> tuple[dict[str, Path], Path, Path | None]:
    """Each node's file, the schema and the common test set (None: neither `test_file` nor
    `test_fraction`).

    Per-site files are used as they are, and so is a test file. One data set (a file, or
    generated records) is cut as the scenario says, after holding out the test set, into files
    of its own format: Parquet from Parquet and from generated records (a tenth of CSV's time
    to write and to read)."""
    data = scenario.data
    if data.sites:
        assert data.schema_file is not None
        return dict(data.sites), data.schema_file, data.test_file
    data_dir.mkdir(parents=True, exist_ok=True)
    if data.synthetic is not None:
        spec = data.synthetic
        x, y_all = synthetic.generate(spec)
        synthetic.generate.cache_clear()  # the table below holds its own copy
        schema_path = synthetic.write_schema(spec, data_dir / synthetic.SCHEMA_FILE)
        records: pd.DataFrame | pa.Table = synthetic.to_table(spec, x, y_all)
        del x
    else:
        assert data.file is not None and data.schema_file is not None
        schema_path = data.schema_file
        records = _read_records(data.file, load_schema(schema_path))
    schema = load_schema(schema_path)
    rows = np.arange(_height(records))
    labels = _labels(records, schema)
    test_file = data.test_file
    if data.test_fraction is not None:
        rows, held = partition.hold_out(labels, data.test_fraction, seed)
        test_file = _write_rows(records, held, data_dir / "test-set" / "test", schema)
    if data.split == "natural":
        found = partition.natural(_text(records, str(data.site_column))[rows])
        parts = {name: rows[i] for name, i in found.items()}
    else:
        y = labels[rows]
        assert data.nodes is not None and data.alpha is not None  # the scenario checked
        if data.split == "dirichlet":
            split = partition.dirichlet_label_skew(y, data.nodes, data.alpha, seed, data.min_rows)
        else:
            split = partition.quantity_skew(len(y), data.nodes, data.alpha, seed, data.min_rows)
        # The names faults use; indices back into all the records.
        parts = dict(zip(scenario.node_names(), [rows[i] for i in split], strict=True))
    files = {
        name: _write_rows(records, np.sort(part), data_dir / name, schema)
        for name, part in parts.items()
    }
    return files, schema_path, test_file


def _read_records(path: Path, schema: DataSchema) -> "pd.DataFrame | pa.Table":
    """A data file's records as they are (text cells for CSV, typed columns for Parquet)."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        return pq.read_table(path)
    header = 0 if schema.header else None
    return pd.read_csv(path, header=header, names=schema.columns, dtype=str, keep_default_na=False)


def _height(records: "pd.DataFrame | pa.Table") -> int:
    return len(records) if isinstance(records, pd.DataFrame) else records.num_rows


def _text(records: "pd.DataFrame | pa.Table", column: str) -> np.ndarray:
    if isinstance(records, pd.DataFrame):
        return records[column].to_numpy()
    values = records.column(column).to_pylist()
    return np.array(["" if v is None else str(v).strip() for v in values], dtype=str)


def _labels(records: "pd.DataFrame | pa.Table", schema: DataSchema) -> np.ndarray:
    """Each record's class as the schema defines it (an unreadable target counts as 0)."""
    column = schema.target.column
    cells = records[column] if isinstance(records, pd.DataFrame) else records.column(column)
    if not isinstance(cells, pd.Series):
        cells = cells.to_pandas()
    target = pd.to_numeric(cells, errors="coerce")
    return (target > schema.target.positive_above).to_numpy().astype(int)


def _write_rows(
    records: "pd.DataFrame | pa.Table", rows: np.ndarray, stem: Path, schema: DataSchema
) -> Path:
    """These rows of the records, in their format, to `stem` + .csv or .parquet."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(records, pd.DataFrame):
        path = stem.with_suffix(".csv")
        records.iloc[rows].to_csv(path, index=False, header=schema.header)
        return path
    return synthetic.write_table(records.take(rows), stem.with_suffix(".parquet"))


def _apply_partitions(scenario: Scenario, folder: Path, names: list[str]) -> None:
    """Each node of a partition group cannot reach the nodes of the other groups meanwhile."""
    peers = {n: peer_id_of(load_key_file(folder / "nodes" / n / "identity.key")) for n in names}
    windows: dict[str, list[dict[str, Any]]] = {}
    for fault in scenario.faults:
        if fault.kind != "partition":
            continue
        for group in fault.groups:
            others = [peers[n] for g in fault.groups if g is not group for n in g]
            for n in group:
                window = {"from": fault.from_round, "to": fault.to_round, "unreachable": others}
                windows.setdefault(n, []).append(window)
    for n, ws in windows.items():
        config = folder / "nodes" / n / "node.toml"
        config.write_text(with_settings(config.read_text(), {"faults.partitions": ws}))


# -- running ----------------------------------------------------------------------------------


def execute(
    folder: Path, scenario: Scenario, plan: Plan, console: Console, chain_url: str | None
) -> float:
    """Run every node on the scenario's backend; kill, restart and pause as the plan says."""
    overrides = {"ledger.chain": chain_url} if chain_url else {}
    if scenario.backend == "ray":
        try:
            from sim.ray_backend import RayNodes  # Ray is imported for this backend only
        except ModuleNotFoundError as exc:
            if exc.name != "ray":
                raise
            raise SwarmError(
                "backend = 'ray' needs Ray: pip install -e '.[ray]' (scripts/setup.sh does)"
            ) from None

        with RayNodes(folder, list(plan.files), overrides, scenario.ray) as nodes:
            return trio.run(supervise, folder, scenario, plan, console, nodes)

    async def main() -> float:
        if scenario.backend == "process":
            return await supervise(folder, scenario, plan, console, ProcessNodes(folder, overrides))
        if plan.workers:
            # Spread by data size (bytes of each node's file): training time follows it.
            loads = {n: float(path.stat().st_size) for n, path in plan.files.items()}
            async with worker_pool(folder, overrides, plan.workers, loads) as pool:
                return await supervise(folder, scenario, plan, console, pool)
        async with trio.open_nursery() as nursery:
            return await supervise(
                folder, scenario, plan, console, InprocNodes(folder, overrides, nursery)
            )

    return trio.run(main)


def run_in_docker(
    folder: Path,
    scenario: Scenario,
    plan: Plan,
    console: Console,
    set_up: Callable[["Chain | None", "ConsortiumPlan | None"], None],
    chain_plan: "ConsortiumPlan",
) -> tuple[float, dict[str, Any] | None]:
    """The run in containers: network, chain, nodes; every one of them removed at the end,
    also on failure or Ctrl-C."""
    from sim.consortium import STATE_FILE, settle
    from sim.docker_backend import DockerNodes, cuts_of, write_record
    from sim.docker_env import DockerSwarm, engine, ensure_images

    client = engine()
    build_seconds = ensure_images(client, folder / "docker-build.log")
    with DockerSwarm(client) as swarm:
        console.print(f"docker: run {swarm.run_id}", highlight=False)
        swarm.create_network(len(plan.files))
        chain = swarm.start_chain() if scenario.chain.backend == "anvil" else None
        set_up(chain, chain_plan if chain else None)
        nodes = DockerNodes(swarm, folder, list(plan.files), chain.url if chain else None)
        cuts = cuts_of(scenario)
        for cut in cuts:
            plan.faults.append(
                f"(docker: {', '.join(cut.nodes)} disconnected from the network in rounds "
                f"{cut.from_round}-{cut.to_round})"
            )
        try:
            wall = trio.run(supervise, folder, scenario, plan, console, nodes, cuts)
            settled = None
            if chain is not None:
                settled = settle(folder, chain, load_manifest(folder))
                swarm.save_chain_state(chain, folder / STATE_FILE)
        finally:
            write_record(folder, swarm, nodes.finish(), image_build_seconds=build_seconds)
    return wall, settled


async def supervise(
    folder: Path,
    scenario: Scenario,
    plan: Plan,
    console: Console,
    nodes: Nodes,
    cuts: Sequence["Cut"] = (),
) -> float:
    """Run the nodes to the end, killing, restarting and pausing as the plan says. Pauses start
    once the slowest running node has finished round `from - 1` and end once it has finished
    round `to`; `cuts` (docker: disconnections) are paced by the cut nodes' own rounds.
    """
    names = list(plan.files)
    began = time.perf_counter()
    plan.memory.sample()
    killed: dict[str, int] = {}  # node -> the last round it had finished
    restarted: set[str] = set()
    frozen: dict[int, str] = {}  # pause index -> node, while it lasts
    thawed: set[int] = set()
    cut_now: set[int] = set()
    healed: set[int] = set()
    for n in names:
        nodes.start(n)
    try:
        # Drawn once a tick, by this loop: Live's own refresh thread would draw as often again
        # and take the GIL from the nodes this process runs.
        with Live(console=console, auto_refresh=False) as live:
            while any(nodes.running(n) for n in names):
                if time.perf_counter() - began > RUN_TIMEOUT:
                    raise SwarmError(f"run did not finish within {RUN_TIMEOUT:.0f}s")
                latest = {n: _latest_record(folder, n, scenario) for n in names}  # once a tick
                done = {n: int(r["round"]) if r else 0 for n, r in latest.items()}
                starting = [n for n in names if latest[n] is None and scenario.analytics is None]
                if problem := failed_at_start(nodes, folder, starting):
                    raise SwarmError(problem)  # at once: the others would wait for it in vain
                for fault in plan.kills:
                    n = fault.node
                    if n not in killed and done[n] >= fault.at:
                        nodes.kill(n)
                        killed[n] = done[n]
                    others = min(done[m] for m in names if m != n)
                    due = fault.restart is not None and others >= fault.restart
                    if n in killed and n not in restarted and due:
                        nodes.start(n)  # resumes from its checkpoint
                        restarted.add(n)
                # Pauses are paced by the nodes that run: one that is down (for good,
                # perhaps), still coming back (its start-up takes rounds) or frozen does not
                # hold them back.
                down = {n for n, last in killed.items() if n not in restarted or done[n] <= last}
                idle = down | set(frozen.values())
                slowest = min((done[m] for m in names if m not in idle), default=scenario.rounds)
                for i, pause in enumerate(plan.pauses):
                    n = pause.node
                    if i in thawed or n in down:
                        continue  # over, or to be frozen once it is back
                    if i not in frozen and slowest >= pause.from_round - 1:
                        if nodes.running(n):  # not if it has already finished
                            nodes.pause(n)
                            console.print(f"{n} frozen after round {slowest}")
                            frozen[i] = n
                        else:
                            thawed.add(i)
                    elif i in frozen and slowest >= pause.to_round:
                        nodes.resume(frozen.pop(i))
                        thawed.add(i)
                        console.print(f"{n} thawed after round {slowest}")
                # Cuts by the cut nodes' own rounds, as the other backends' partitions are:
                # their rounds `from`..`to` run cut off (a node that restarts and catches up
                # would make any other pace skip a short cut).
                for i, cut in enumerate(cuts):
                    links: Links = nodes  # type: ignore[assignment]  # only docker has cuts
                    at = min(done[n] for n in cut.nodes)
                    if i not in cut_now and at >= cut.from_round - 1:
                        for n in cut.nodes:
                            links.cut(n)
                        cut_now.add(i)
                        console.print(f"{', '.join(cut.nodes)} cut off after round {at}")
                    if i in cut_now and i not in healed and at >= cut.to_round:
                        for n in cut.nodes:
                            links.heal(n)
                        healed.add(i)
                        console.print(f"{', '.join(cut.nodes)} connected after round {at}")
                progress = _progress(scenario, plan, latest, done, down, set(frozen.values()))
                live.update(progress, refresh=True)
                plan.memory.sample()
                await trio.sleep(0.3)
    finally:
        nodes.stop_all()
    if failed := nodes.failures():
        raise SwarmError(f"nodes failed: {failed}")
    return time.perf_counter() - began


def _latest_record(folder: Path, name: str, scenario: Scenario) -> dict[str, Any] | None:
    """The node's newest record: of a training round, or of a query's secure sum."""
    kind = "metrics.jsonl" if scenario.analytics is None else ANALYTICS_PROGRESS
    return last_record(folder / "nodes" / name / "out" / kind)


def _progress(
    scenario: Scenario,
    plan: Plan,
    latest: dict[str, dict[str, Any] | None],
    done: dict[str, int],
    down: set[str],
    frozen: set[str],
) -> Group:
    accs = []
    table = Table.grid(padding=(0, 2))
    for n in plan.files:
        record = latest[n]
        acc = record["merged"]["accuracy"] if record and "merged" in record else None
        if acc is not None:
            accs.append(acc)
        if n in down or n in frozen:
            state = "down" if n in down else "frozen"
        else:
            state = f"acc {acc:.3f}" if acc is not None else "starting"
            if record and "analytics" in record:
                state = f"{record['analytics']['sums']} secure sums"
        if record and (budget := record.get("privacy")):
            state += f"  ε {budget['epsilon']:.2f}" + (" spent" if budget.get("retired_at") else "")
        if len(plan.files) <= MAX_PROGRESS_ROWS:
            steps = f"{done[n]}/{scenario.rounds}" if scenario.analytics is None else ""
            table.add_row(n, steps, state)
    if len(plan.files) > MAX_PROGRESS_ROWS:  # one line: a row per node would not be read
        rounds = np.array(list(done.values()))
        table.add_row(
            f"{len(rounds)} nodes",
            f"rounds done: min {rounds.min()}, median {int(np.median(rounds))}, "
            f"max {rounds.max()} of {scenario.rounds}",
            f"{int((rounds == 0).sum())} starting",
        )
    current = min(done.values())
    active = in_effect(plan.fault_windows, current)
    active += [f"{n} down" for n in down] + [f"{n} frozen" for n in frozen]
    active = list(dict.fromkeys(active))  # a kill's window and its node being down say the same
    mean = f"mean accuracy {np.mean(accs):.3f}   " if accs else ""
    line = f"{mean}faults in effect: {', '.join(active) or 'none'}"
    return Group(table, line)


# -- results ----------------------------------------------------------------------------------


def collect(
    folder: Path,
    scenario: Scenario,
    plan: Plan,
    wall: float,
    settled: dict[str, Any] | None,
    timing: dict[str, float] | None = None,
) -> dict[str, Any]:
    from sim.privacy_audit import privacy_summary, spent

    baseline_results, cached_from = cached_baselines(scenario, plan, folder)
    names = list(plan.files)
    target = scenario.baselines.target_accuracy
    per_node = {n: read_records(folder / "nodes" / n / "out" / "metrics.jsonl") for n in names}
    members = (settled or {}).get("members", {})
    nodes: dict[str, Any] = {}
    for n in names:
        cfg = load_config(folder / "nodes" / n / "node.toml")
        summary = _node_summary(cfg.node.output_dir, per_node[n])
        final = summary["final"]["merged"]
        reached = [r["round"] for r in per_node[n] if target and r["merged"]["accuracy"] >= target]
        member = members.get(n)
        nodes[n] = {
            "accuracy": final["accuracy"],
            "auc": final["auc"],
            "rows": summary["final"]["train_samples"],
            "finished": summary["finished"],
            "bytes_sent": sum(r["bytes_sent"] for r in per_node[n]),
            "peak_rss_mb": summary["peak_rss_mb"],
            "rounds_to_target": reached[0] if reached else None,
            "contribution": member["score"] if member else None,
            "reward_eth": member["reward_wei"] / WEI_PER_ETH if member else None,
            "honest": n in plan.honest,
            **{k: (spent(per_node[n]) or {}).get(k) for k in ("epsilon", "delta")},
        }
    honest = [nodes[n] for n in plan.honest]
    summary = {
        "scenario": scenario.name,
        "seed": plan.seed,
        "backend": scenario.backend,
        "rounds": scenario.rounds,
        "wall_seconds": wall,
        # What the nodes' and baselines' accuracy and AUC are on: each node's validation
        # split, or without one (validation_fraction = 0) the common test set.
        "evaluated_on": "validation" if scenario.data.validation_fraction else "test",
        "nodes": nodes,
        "mean": {
            "accuracy": float(np.mean([v["accuracy"] for v in honest])),
            "auc": _mean([v["auc"] for v in honest]),
        },
        "rounds_wall_seconds": rounds_wall(per_node, scenario.rounds),
        "timing": timing,
        "baselines": baseline_results,
        "baselines_cached_from": str(cached_from) if cached_from else None,
        # Sampled while the nodes ran and once after the baselines, and at least this
        # process's own peak (which may fall between two samples); the docker backend's
        # containers are not this process's children (docker.json has their own peaks).
        "peak_rss_mb_total": max(plan.memory.peak_mb, plan.memory.sample(), own_peak_rss_mb()),
        "peak_rss_mb_by_process": plan.memory.at_peak,
        "faults": plan.faults,
        "attacks": plan.attacks,
        "fault_windows": plan.fault_windows,
        "target_accuracy": target,
        "ledger": settled,
        "privacy": None,
    }
    if plan.test_file is not None:
        from sim.common_test import swarm_on_test

        test = load_test_set(plan.test_file, load_schema(plan.schema))
        rows = {n: nodes[n]["rows"] for n in names}
        summary["test"] = swarm_on_test(
            folder, plan.test_file, test, per_node, rows, plan.honest,
            _recipe(scenario, plan), baseline_results,
        )  # fmt: skip
    if scenario.evaluation.cross_site:
        from sim.cross_site import cross_site_matrix

        summary["cross_site"] = cross_site_matrix(folder, names, settled)
    if scenario.swarm.personalize != "none":
        from sim.heterogeneity import site_scores, swarm_matrix

        matrix = swarm_matrix(folder, plan.honest, plan.files, plan.schema, _recipe(scenario, plan))
        summary["heterogeneity"] = {
            "personalize": scenario.swarm.personalize,
            "personalized_swarm": site_scores(matrix),
            "swarm": None,  # filled in by the shared-swarm run (baselines.shared_swarm)
            "local_only": (baseline_results.get("local_only") or {}).get("sites"),
        }
    if scenario.privacy is not None:
        summary["privacy"] = privacy_summary(
            folder, plan.honest, per_node, nodes, scenario.privacy.audit,
            scenario.privacy.secure_aggregation,
        )  # fmt: skip
    # consensus.json first: the live dashboard takes summary.json as the sign both are there
    (folder / "consensus.json").write_text(json.dumps(consensus_distance(folder, names)))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _node_summary(out: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A node's summary.json; for a node killed for good (it wrote none), its last round."""
    path = out / "summary.json"
    if path.exists():
        return {**json.loads(path.read_text()), "finished": True}
    if not records:
        raise SwarmError(f"{out}: no summary.json and no round recorded")
    last = records[-1]
    return {"final": last, "peak_rss_mb": last["peak_rss_mb"], "finished": False}


def rounds_wall(per_node: dict[str, list[dict[str, Any]]], rounds: int) -> float | None:
    """Seconds from the last node finishing round 1 to the last finishing the final round.

    Round 1 is left out here and in the FedAvg baselines: it holds each process's start-up and
    torch's one-time warm-up, which say nothing about either protocol."""
    finished: dict[int, float] = {}
    for records in per_node.values():
        for r in records:
            finished[r["round"]] = max(finished.get(r["round"], 0.0), r["time"])
    if rounds < 2 or 1 not in finished or rounds not in finished:
        return None
    return finished[rounds] - finished[1]


def cached_baselines(
    scenario: Scenario, plan: Plan, folder: Path
) -> tuple[dict[str, Any], Path | None]:
    """`baselines`, and the cache file they came from when this scenario, seed and data have
    been run before (None: trained now, or none asked)."""
    if not scenario.baselines.asked:
        return {}, None
    if not scenario.baselines.cache:
        return baselines(scenario, plan, folder), None
    from sim.baseline_cache import baseline_key, cached

    settings = {
        "seed": plan.seed,
        "rounds": scenario.rounds,
        "data": scenario.data.model_dump(mode="json"),
        "model": scenario.model.model_dump(mode="json"),
        "training": scenario.training.model_dump(mode="json"),
        "baselines": scenario.baselines.model_dump(mode="json", exclude={"cache"}),
        "personalize": scenario.swarm.personalize,  # local only's own/all-site scores with it
    }
    if plan.test_file is not None:  # every baseline is scored on it: its rows are data too
        settings["test_set"] = hashlib.sha256(plan.test_file.read_bytes()).hexdigest()
    key = baseline_key(settings, plan.files, plan.honest, plan.schema)
    return cached(key, lambda: baselines(scenario, plan, folder))


def _recipe(scenario: Scenario, plan: Plan) -> "Recipe":
    """What the baselines share with the nodes: model, training schedule, split and seeds."""
    from node.baselines import Recipe

    return Recipe(
        model=scenario.model.name,
        hidden=scenario.model.hidden,
        settings=scenario.training.settings(),
        rounds=scenario.rounds,
        val_fraction=scenario.data.validation_fraction,
        split_seed=plan.seed,
        model_seed=plan.seed,
    )


def baselines(scenario: Scenario, plan: Plan, folder: Path) -> dict[str, Any]:
    """Local-only, centralized and server FedAvg on the honest nodes' partitions; with a common
    test set, each one's scores on it too ("test")."""
    wanted = scenario.baselines
    if not wanted.asked:
        return {}
    from node.baselines import fedavg, local_only, pooled
    from sim import common_test
    from sim.fedavg_network import run_fedavg_network

    schema = load_schema(plan.schema)
    tables = {n: load_table(plan.files[n], schema) for n in plan.honest}
    test = None if plan.test_file is None else load_test_set(plan.test_file, schema)
    recipe = _recipe(scenario, plan)
    out: dict[str, Any] = {}
    if wanted.local_only:
        scores, curves = local_only(tables, recipe, test)
        out["local_only"] = _described(scores)
        if test is not None:
            out["local_only"]["test"] = common_test.per_site(curves)
        if scenario.swarm.personalize != "none":  # the heterogeneity table's own/all-site
            from node.baselines import local_only_matrix
            from sim.heterogeneity import site_scores

            out["local_only"]["sites"] = site_scores(local_only_matrix(tables, recipe))
    if wanted.centralized:
        scores, curve = pooled(tables, recipe, test)
        out["centralized"] = _described(scores)
        if test is not None:
            out["centralized"]["test"] = common_test.one_model(curve)
    if wanted.fedavg:
        began = time.perf_counter()
        results, history = fedavg(tables, recipe, test)
        out["fedavg"] = {
            **_described(results),
            "wall_seconds": time.perf_counter() - began,
            "rounds_wall_seconds": sum(h["seconds"] for h in history[1:]),
            "history": history,
        }
        if test is not None:
            out["fedavg"]["test"] = common_test.from_history(history)
    if wanted.fedavg_network:
        sites = {n: plan.files[n] for n in plan.honest}
        run = run_fedavg_network(sites, plan.schema, recipe, folder / "fedavg", plan.test_file)
        out["fedavg_network"] = {
            **{k: run[k] for k in ("mean_accuracy", "mean_auc", "per_node", "wall_seconds")},
            "rounds_wall_seconds": sum(run["round_seconds"][1:]),
            "history": run["history"],
        }
    return out


def _described(results: dict[str, Any]) -> dict[str, Any]:
    per_node = {n: r.to_dict() for n, r in results.items()}
    return {
        "mean_accuracy": float(np.mean([r["accuracy"] for r in per_node.values()])),
        "mean_auc": _mean([r["auc"] for r in per_node.values()]),
        "per_node": per_node,
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _report(
    out: Path, summary: dict[str, Any], folder: Path, seeds: list[dict[str, Any]] | None
) -> None:
    names = list(summary["nodes"])
    per_node = {n: read_records(folder / "nodes" / n / "out" / "metrics.jsonl") for n in names}
    consensus = json.loads((folder / "consensus.json").read_text())
    from sim.report import write_report

    write_report(out, summary, per_node, consensus, seeds)
