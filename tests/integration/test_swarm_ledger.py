"""The swarm on its consortium chain (real Anvil, real node processes): membership gates peers,
nodes score each other, and rewards follow; free riders and duplicates gain nothing."""

import subprocess

import multiaddr
import numpy as np
import pytest
import trio
from eth_account import Account

from gossip import wire
from gossip.errors import PeerUnavailable
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, parse_peer_addr
from gossip.identity import create_key_file, load_key_file, peer_id_of
from ledger.accounts import write_key_file
from ledger.contract import Ledger
from node.config import load_config
from node.models import build_model
from sim.consortium import ConsortiumPlan, admin_ledger, open_chain
from sim.local_swarm import (
    HEART_DISEASE,
    HEART_SITES,
    free_port,
    init_swarm,
    load_manifest,
    node_command,
    start_node,
    stop_processes,
)
from sim.run import run_scenario
from tests.integration.swarm_support import QUIET, final_params, flat, metrics, synthetic_sites

pytestmark = pytest.mark.integration

NOT_MEMBER = "not an active member on the ledger"


def mlp_params(features: int) -> dict[str, np.ndarray]:
    model = build_model("mlp", features, [32], 0)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_unregistered_peer_is_refused_and_a_deactivated_member_is_dropped(tmp_path):
    rounds = 14
    sites = synthetic_sites(tmp_path / "data", {"a": 200, "b": 150, "c": 120})
    swarm = tmp_path / "swarm"
    init_swarm(
        swarm, sites, tmp_path / "data" / "schema.toml", rounds=rounds, topology="full",
        model="mlp", ledger=ConsortiumPlan(rounds_per_epoch=4),
    )  # fmt: skip
    manifest = load_manifest(swarm)
    configs = {n: load_config(swarm / "nodes" / n / "node.toml") for n in ("a", "b", "c")}
    peers = {n: peer_id_of(load_key_file(c.node.key_file)) for n, c in configs.items()}
    node_a = parse_peer_addr(f"{configs['a'].node.listen}/p2p/{peers['a']}")
    rogue_key = create_key_file(tmp_path / "rogue.key")
    rogue_id, rogue_port = peer_id_of(rogue_key), free_port()
    poisoned = {k: np.full_like(v, 100.0) for k, v in mlp_params(2).items()}
    fetches: dict[str, list] = {"refusals": [], "got": []}
    deactivated_after: list[int] = []

    async def rogue_and_admin(procs: dict[str, subprocess.Popen], admin: Ledger) -> None:
        host = build_host(rogue_key)
        exchange = ParamExchange(host, SnapshotStore(keep_rounds=rounds), io_timeout=5)
        for r in range(1, rounds + 1):  # poisoned parameters on offer for every round
            await exchange.store.publish(wire.Snapshot("params", r, rogue_id, 10**4, 2, poisoned))
        expect = wire.Expectation("params", 0, rounds, wire.specs_of(poisoned))
        async with host.run([multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{rogue_port}")]):
            with trio.fail_after(300):
                while any(p.poll() is None for p in procs.values()):
                    done = len(metrics(swarm, "a"))
                    if not deactivated_after and done >= 3:
                        await trio.to_thread.run_sync(
                            admin.deactivate, manifest["ledger"]["members"]["c"]
                        )
                        deactivated_after.append(len(metrics(swarm, "a")))
                    if done >= 1 and len(fetches["refusals"]) < 3:
                        try:  # the rogue dials node a and asks for its parameters
                            got = await exchange.fetch(node_a, done, expect, 5, connect_timeout=3)
                            fetches["got"].append(got)
                        except PeerUnavailable as exc:
                            fetches["refusals"].append(exc.reason)
                    await trio.sleep(0.05)

    with open_chain(swarm) as chain:
        procs = {}
        for name, cfg in configs.items():
            overrides: dict = {"ledger.chain": chain.url}
            if name == "a":
                rogue = f"/ip4/127.0.0.1/tcp/{rogue_port}/p2p/{rogue_id}"
                overrides["node.neighbours"] = [*cfg.node.neighbours, rogue]
            procs[name] = start_node(swarm, name, overrides)
        try:
            trio.run(rogue_and_admin, procs, admin_ledger(chain, manifest["ledger"]["contract"]))
        finally:
            stop_processes(procs.values())
    for name, proc in procs.items():
        log = (swarm / "nodes" / name / "node.log").read_text()[-3000:]
        assert proc.returncode == 0, (name, log)

    a = metrics(swarm, "a")
    assert [r["round"] for r in a] == list(range(1, rounds + 1))
    # The unregistered peer: never fetched from, never merged, refused when it dialled.
    assert all(rogue_id not in r["neighbours_reached"] for r in a)
    assert all(r["failures"].get(rogue_id) == NOT_MEMBER for r in a)
    assert fetches["got"] == []
    assert len(fetches["refusals"]) == 3 and all("refused" in r for r in fetches["refusals"])
    assert a[-1]["refused_total"].get(rogue_id, 0) >= 3
    assert np.abs(flat(final_params(swarm, "a"))).max() < 50  # no trace of the poisoned 100s
    # The deactivated member: reached before, dropped from the round after next at the latest.
    k = deactivated_after[0]
    assert k <= rounds - 3, "the run ended before the deactivation could be observed"
    for name in ("a", "b"):
        records = metrics(swarm, name)
        assert any(peers["c"] in r["neighbours_reached"] for r in records[:k])
        late = [r for r in records if r["round"] >= k + 2]
        assert late and all(peers["c"] not in r["neighbours_reached"] for r in late)
        assert all(r["failures"].get(peers["c"]) == NOT_MEMBER for r in late)


def test_a_node_whose_account_is_not_a_member_refuses_to_start(tmp_path):
    sites = synthetic_sites(tmp_path / "data", {"a": 60, "b": 60})
    swarm = tmp_path / "swarm"
    init_swarm(
        swarm, sites, tmp_path / "data" / "schema.toml", rounds=2, topology="full",
        model="logreg", ledger=ConsortiumPlan(),
    )  # fmt: skip
    stranger = tmp_path / "stranger.key"
    account = Account.create()
    write_key_file(stranger, account)
    with open_chain(swarm) as chain:
        cmd = node_command(
            swarm / "nodes" / "a" / "node.toml",
            {"ledger.chain": chain.url, "ledger.key_file": str(stranger)},
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"account {account.address} is not registered" in done.stderr
    assert account.key.hex() not in done.stderr + done.stdout  # keys never reach the output


# --- rewards: a free rider and a hospital registered twice ------------------------------------

ROUNDS = 20


REWARDS_SCENARIO = """
name = "rewards"
rounds = {rounds}
[data]
schema = "{data}/schema.toml"
[data.sites]
{sites}
[topology]
kind = "full"
[chain]
backend = "anvil"
rounds_per_epoch = 5
[baselines]
local_only = false
centralized = false
fedavg = false
"""


def run_heart_disease(folder, sites: dict[str, str], adversaries: dict[str, str]) -> dict:
    """A scenario run of hospitals named `sites` (name -> whose records they hold), with the
    `adversaries` (name -> free-rider mode)."""
    files = "\n".join(f'{n} = "{HEART_DISEASE / HEART_SITES[s]}"' for n, s in sites.items())
    attacks = "".join(
        f'[[attacks]]\nkind = "free_rider"\nnode = "{name}"\nmode = "{mode}"\n'
        for name, mode in adversaries.items()
    )
    scenario = folder / "scenario.toml"
    text = REWARDS_SCENARIO.format(rounds=ROUNDS, data=HEART_DISEASE, sites=files)
    scenario.write_text(text + attacks)
    [summary] = run_scenario(scenario, folder / "run", QUIET)
    return summary


@pytest.fixture(scope="module")
def consortium_runs(tmp_path_factory):
    """The same consortium with a free rider, once with one hospital registered twice (same
    records, a second identity and account) and once without."""
    honest = {s: s for s in HEART_SITES}
    free_rider = {"freerider": "switzerland"}  # holds records, never trains, replays averages
    with_twin = run_heart_disease(
        tmp_path_factory.mktemp("twin"),
        {**honest, "hungarian_twin": "hungarian", **free_rider},
        {"freerider": "replay"},
    )
    without = run_heart_disease(
        tmp_path_factory.mktemp("single"), {**honest, **free_rider}, {"freerider": "replay"}
    )
    return with_twin, without


def rewards(results: dict) -> dict[str, int]:
    return {name: m["reward_wei"] for name, m in results["ledger"]["members"].items()}


def test_rewards_flow_and_the_audit_passes(consortium_runs):
    for results in consortium_runs:
        ledger = results["ledger"]
        print({n: (m["score"], m["reward_wei"] / 1e18) for n, m in ledger["members"].items()})
        assert ledger["audit_ok"], ledger["findings"]
        assert ledger["finalized_epochs"] == [0, 1, 2, 3]
        assert ledger["models_checked"] == len(ledger["members"]) * ROUNDS
        paid = sum(rewards(results).values())
        assert paid > 0.99 * 4 * 10**18  # four epochs of 1 ETH, less rounding dust


def test_free_rider_earns_at_most_one_percent(consortium_runs):
    for results in consortium_runs:
        paid = rewards(results)
        assert paid["freerider"] <= 0.01 * sum(paid.values())


def test_a_hospital_registered_twice_earns_no_more_than_once(consortium_runs):
    with_twin, without = consortium_runs
    pair = rewards(with_twin)["hungarian"] + rewards(with_twin)["hungarian_twin"]
    alone = rewards(without)["hungarian"]
    print(f"pair {pair / 1e18:.4f} ETH, alone {alone / 1e18:.4f} ETH")
    assert pair <= 1.10 * alone


def test_hospitals_with_more_records_earn_more(consortium_runs):
    # Cleveland (303 records) and Hungary (293) against Switzerland (123) and V.A. (199).
    _, without = consortium_runs
    paid = rewards(without)
    assert min(paid["cleveland"], paid["hungarian"]) > max(paid["switzerland"], paid["va"])
