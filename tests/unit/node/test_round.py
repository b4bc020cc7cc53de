"""One round of `NodeRunner` over an in-memory exchange: its named steps, their order and what
each one is handed (no network: the fake exchange serves two neighbours' parameters)."""

import copy
import inspect
from pathlib import Path
from statistics import NormalDist
from typing import cast

import numpy as np
import pytest
import trio

from gossip import wire
from gossip.exchange import TrafficCounters
from gossip.identity import create_key_file, peer_id_of
from node.checkpoint import load_checkpoint
from node.config import load_config
from node.dataset import load_schema, load_table
from node.errors import DataError
from node.init import init_node
from node.merge import MergeSettings, merge
from node.metrics import read_records
from node.params import Neighbour, Params, load_params, model_params
from node.privacy import PrivacyAccountant
from node.runner import NodeRunner
from node.scaling import Scaler, local_stats
from node.training import evaluate

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"
STEPS = ("_local_update", "_gather", "_score", "_combine", "_record")


class FakeStore:
    def __init__(self) -> None:
        self.published: list[wire.Snapshot] = []
        self.retired: set[str] = set()

    async def publish(self, snapshot: wire.Snapshot) -> None:
        self.published.append(snapshot)


class FakeExchange:
    """Serves each neighbour's parameters from memory, with the header a real fetch checks."""

    def __init__(self, served: dict[str, Params]) -> None:
        self.served = served
        self.store = FakeStore()
        self.counters = TrafficCounters()

    async def fetch(self, info, round_, expect, timeout, connect_timeout):
        peer = info.peer_id.to_base58()
        header = wire.Header("ok", "params", round_, peer, 50, 2, expect.specs, ())
        return header, self.served[peer]


def shifted(params: Params, by: float) -> Params:
    return {k: v + np.float32(by) for k, v in params.items()}


@pytest.fixture
def runner(tmp_path):
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    neighbours = [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)]
    path, _ = init_node(
        tmp_path / "node",
        "cleveland",
        str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"),
        "/ip4/127.0.0.1/tcp/0",
        neighbours,
    )
    cfg = load_config(path, ["contribution.enabled=true", "node.fsync=false"])
    return NodeRunner(cfg, publish_transform=lambda params: shifted(params, 0.5))


def test_one_round_runs_its_steps_in_order_each_handed_the_one_before_s_result(runner):
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    runner.samples = len(split.train_y)
    run = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), None)
    peers = sorted(info.peer_id.to_base58() for info in runner.neighbours)
    runner.exchange = FakeExchange({p: shifted(run.initial, 0.1 * i) for i, p in enumerate(peers)})
    calls: list[tuple[str, dict]] = []  # (step, the arguments it received), in call order
    results: dict[str, object] = {}

    def spy(name, step):
        def called(*args):
            calls.append((name, inspect.signature(step).bind(*args).arguments))
            results[name] = step(*args)
            return results[name]

        async def awaited(*args):
            calls.append((name, inspect.signature(step).bind(*args).arguments))
            results[name] = await step(*args)
            if name == "_local_update":  # what the local update left in the model
                results["updated"] = model_params(run.model)
            return results[name]

        return awaited if inspect.iscoroutinefunction(step) else called

    for name in STEPS:
        setattr(runner, name, spy(name, getattr(runner, name)))
    runner.publish_transform = spy("publish_transform", runner.publish_transform)

    record = trio.run(runner._round, run, 1)

    assert [name for name, _ in calls] == [
        "_local_update",
        "publish_transform",
        "_gather",
        "_score",
        "_combine",
        "_record",
    ]
    got = dict(calls)
    assert got["_local_update"]["previous"] is run.initial
    updated = cast(Params, results["updated"])
    assert_same(got["publish_transform"]["params"], updated)
    published = shifted(updated, 0.5)
    assert_same(runner.exchange.store.published[0].tensors, published)
    assert_same(got["_gather"]["own"], published)
    gathered = [Neighbour(p, runner.exchange.served[p], 50, 2) for p in peers]
    assert got["_score"]["neighbours"] == gathered
    assert_same(got["_score"]["own"], published)
    assert got["_combine"]["neighbours"] == gathered
    assert_same(got["_combine"]["own"], published)
    assert got["_combine"]["degree"] == 2
    combined = cast(Params, results["_combine"])
    assert got["_record"]["merged"] is combined
    assert got["_record"]["record"] is record
    assert record["neighbours_reached"] == peers
    assert record["contribution"]["scores"].keys() == set(peers)
    assert read_records(runner.metrics_path) == [record]
    assert run.current is combined
    assert_same(model_params(run.model), combined)


def assert_same(a: Params, b: Params) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_private_rounds_spend_the_budget_then_stop_publishing(tmp_path):
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0",
        [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)],
    )  # fmt: skip
    # A budget the noise pays for two rounds of the planned five, no more.
    settings = ["node.fsync=false", "swarm.rounds=5", "privacy.noise_multiplier=1.0",
                "privacy.seeded_noise=true"]  # fmt: skip
    probe = NodeRunner(load_config(path, settings))
    probe.out.mkdir(parents=True)
    probe.membership = None
    split = probe._load_data()
    probe.samples = len(split.train_y)
    scaler = Scaler.from_stats(local_stats(split.train_x))
    plan = probe._start(split, scaler, None).privacy.plan  # type: ignore[union-attr]
    accountant = PrivacyAccountant.for_plan(plan)
    accountant.record_round(plan)
    accountant.record_round(plan)
    budget = accountant.spent() + 1e-9
    runner = NodeRunner(load_config(path, [*settings, f"privacy.target_epsilon={budget}"]))
    runner.membership = None
    runner.samples = probe.samples
    run = runner._start(split, scaler, None)
    runner.exchange = FakeExchange({p: run.initial for p in peers})

    records = [trio.run(runner._round, run, r) for r in (1, 2, 3, 4)]

    spent = [r["privacy"]["epsilon"] for r in records]
    assert spent[0] < spent[1] == spent[2] == spent[3] == pytest.approx(budget, abs=1e-6)
    assert [r["privacy"]["retired_at"] for r in records] == [None, None, 3, 3]
    assert [r["train_loss"] is None for r in records] == [False, False, True, True]
    assert runner.exchange.store.retired == {"params", "mix"}  # "gone" at once
    assert [s.round for s in runner.exchange.store.published] == [1, 2]  # nothing new after
    state = load_checkpoint(runner.out / "checkpoint").state  # type: ignore[union-attr]
    assert state["retired_at"] == 3
    assert PrivacyAccountant.from_state(state["privacy"]).spent() == pytest.approx(spent[-1])


def test_the_mass_is_advertised_once_every_partner_was_heard_and_mixing_steps_follow(tmp_path):
    """Round 1 knows no partner's count (mass 0: unknown); round 2 has heard both (50 rows
    each, the fake header's). With gossip_steps = 3 each round also serves its merge twice
    more, as "mix" steps r * 3 + 1 and r * 3 + 2, and merges what the partners serve there."""
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0",
        [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)],
    )  # fmt: skip
    runner = NodeRunner(load_config(path, ["node.fsync=false", "swarm.gossip_steps=3"]))
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    runner.samples = len(split.train_y)
    run = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), None)
    runner.exchange = FakeExchange({p: shifted(run.initial, 1.0) for p in sorted(peers)})

    records = [trio.run(runner._round, run, r) for r in (1, 2)]

    mass = runner.samples + 2 * 50
    assert [r["mass"] for r in records] == [0, mass]
    assert [r["mixing_reached"] for r in records] == [[2, 2], [2, 2]]
    published = [(s.kind, s.round, s.mass) for s in runner.exchange.store.published]
    assert published == [
        ("params", 1, 0), ("mix", 4, 0), ("mix", 5, 0),
        ("params", 2, mass), ("mix", 7, mass), ("mix", 8, mass),
    ]  # fmt: skip
    # Step 2 of round 1 served the merge of step 1's model with what the partners served.
    steps = runner.exchange.store.published
    served = [Neighbour(p, runner.exchange.served[p], 50, 2) for p in sorted(peers)]
    me = Neighbour(runner.peer_id, steps[1].tensors, runner.samples, 2, 0)
    expected = merge("neighbourhood", me, served, MergeSettings())
    for name, tensor in expected.items():
        np.testing.assert_allclose(steps[2].tensors[name], tensor, rtol=1e-6)
        assert not np.allclose(steps[1].tensors[name], tensor)


def test_a_node_with_a_common_test_set_records_its_merged_model_on_it(tmp_path):
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0",
        [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)],
    )  # fmt: skip
    test_file = DATA / "processed.hungarian.data"
    cfg = load_config(path, ["node.fsync=false", f'data.test_path="{test_file}"'])
    runner = NodeRunner(cfg)
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    runner.samples = len(split.train_y)
    scaler = Scaler.from_stats(local_stats(split.train_x))
    run = runner._start(split, scaler, None)
    runner.exchange = FakeExchange({p: shifted(run.initial, 0.1) for p in peers})

    record = trio.run(runner._round, run, 1)

    table = load_table(test_file, load_schema(DATA / "schema.toml"))
    expected = evaluate(run.model, scaler.transform(table.features), table.target)
    assert record["test"] == {
        "accuracy": pytest.approx(expected.accuracy),
        "auc": pytest.approx(expected.auc),
        "loss": pytest.approx(expected.loss, rel=1e-5),
    }
    assert expected.n != len(split.val_y)  # not the node's own validation split
    assert read_records(runner.metrics_path)[0]["test"] == record["test"]
    assert record["evaluated_on"] == "validation"
    assert record["merged"]["n"] == len(split.val_y)
    no_test = NodeRunner(load_config(path, ["node.fsync=false"]))
    merged = evaluate(run.model, run.val_x, run.val_y)
    assert no_test._test(no_test._start(split, scaler, None), merged) == {}


def test_with_no_validation_split_a_node_evaluates_and_scores_on_the_common_test_set(tmp_path):
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0",
        [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)],
    )  # fmt: skip
    test_file = DATA / "processed.va.data"
    settings = ["node.fsync=false", "contribution.enabled=true", "data.validation_fraction=0",
                f'data.test_path="{test_file}"']  # fmt: skip
    runner = NodeRunner(load_config(path, settings))
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    site = load_table(DATA / "processed.cleveland.data", load_schema(DATA / "schema.toml"))
    assert len(split.train_y) == len(site.target) and len(split.val_y) == 0  # all rows train
    runner.samples = len(split.train_y)
    scaler = Scaler.from_stats(local_stats(split.train_x))
    run = runner._start(split, scaler, None)
    # Two different models (not parallel shifts, which the scorer would join as near-copies).
    rng = np.random.default_rng(0)
    served = {
        p: {k: v + rng.normal(0, 0.3, v.shape).astype(np.float32) for k, v in run.initial.items()}
        for p in sorted(peers)
    }
    runner.exchange = FakeExchange(served)

    record = trio.run(runner._round, run, 1)

    table = load_table(test_file, load_schema(DATA / "schema.toml"))
    expected = evaluate(run.model, scaler.transform(table.features), table.target)
    assert record["evaluated_on"] == "test"
    assert record["merged"] == expected.to_dict()
    assert record["test"] == {"accuracy": expected.accuracy, "auc": expected.auc,
                              "loss": expected.loss}  # fmt: skip
    # The neighbours are scored by the AUC of merges on the test rows: a coalition's value is
    # computed here on those rows, independently of the scorer.
    scores = record["contribution"]["scores"]
    assert set(scores) == set(peers) and any(v != 0 for v in scores.values())
    rows = scaler.transform(table.features)

    def auc_of(params: Params) -> float:
        model = copy.deepcopy(run.model)
        load_params(model, params)
        auc = evaluate(model, rows, table.target).auc
        assert auc is not None
        return auc

    base = auc_of(run.initial)
    first, second = sorted(peers)
    both = {k: (served[first][k] + served[second][k]) / 2 for k in served[first]}  # 50 rows each
    alone = {p: auc_of(served[p]) - base for p in peers}
    together = auc_of(both) - base
    for p, q in ((first, second), (second, first)):  # exact Shapley of two players
        assert scores[p] == pytest.approx((alone[p] + together - alone[q]) / 2, abs=1e-6)


def test_a_node_refuses_a_common_test_set_that_does_not_match_the_schema_before_starting(
    tmp_path,
):
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0", [],
    )  # fmt: skip
    bad = tmp_path / "test.data"
    bad.write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n57,1,4,130,high,0,0,150,1,1,2,0,3,1\n")
    runner = NodeRunner(load_config(path, [f'data.test_path="{bad}"']))
    runner.out.mkdir(parents=True)
    with pytest.raises(DataError, match=rf"^{bad}: .*column 'chol' \(1 row\), e.g. line 2"):
        runner._load_data()


@pytest.mark.parametrize(
    ("mode", "z"),
    [("alie", "1.5"), ("alie", None), ("ipm", None)],
)
def test_a_crafting_adversary_publishes_from_what_it_received_the_round_before(tmp_path, mode, z):
    """Round 1 has received nothing: it republishes what it holds. Round 2 publishes ALIE's
    mean - z std of round 1's arrivals, or IPM's model minus epsilon times their mean update
    from what it held when round 1 began; it never trains."""
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    path, _ = init_node(
        tmp_path / "node", "cleveland", str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0",
        [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)],
    )  # fmt: skip
    settings = ["node.fsync=false", f"adversary.mode={mode}", "adversary.ipm_epsilon=2.0"]
    settings += [f"adversary.alie_z={z}"] if z else []
    # Without z: the paper's z_max for n = 2 received + 1 attacker, f = 1: Phi^-1(2 / 3).
    expected_z = float(z) if z else NormalDist().inv_cdf(2 / 3)
    runner = NodeRunner(load_config(path, settings))
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    runner.samples = len(split.train_y)
    run = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), None)
    served = {p: shifted(run.initial, 0.1 + 0.3 * i) for i, p in enumerate(sorted(peers))}
    runner.exchange = FakeExchange(served)

    records = [trio.run(runner._round, run, 1)]
    held = run.current  # round 1's merge: what round 2 begins from
    records.append(trio.run(runner._round, run, 2))
    first, second = (s.tensors for s in runner.exchange.store.published)

    assert [r["train_loss"] for r in records] == [None, None]
    assert_same(first, run.initial)
    for name, start in run.initial.items():
        stack = np.stack([served[p][name] for p in sorted(peers)]).astype(np.float64)
        if mode == "alie":
            expected = stack.mean(axis=0) - expected_z * stack.std(axis=0)
        else:
            expected = held[name] - 2.0 * (stack.mean(axis=0) - start)
        np.testing.assert_allclose(second[name], expected, rtol=1e-5, atol=1e-6)
