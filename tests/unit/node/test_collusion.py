"""A colluding group pools what its members received: every member gets the same union (the
members' own models out, a model several received once), so all craft the same model."""

import numpy as np
import trio

from node.adversary import alie
from node.collusion import pooled
from node.params import Neighbour


def model(value):
    return {"w": np.full((2, 2), value, np.float32), "b": np.array([value], np.float32)}


def arrived(peer, value):
    return Neighbour(peer, model(value), 10, 3)


async def pool_both(folder, a_received, b_received):
    results = {}

    async def member(peer, received):
        results[peer] = await pooled(folder, 4, peer, received, 2, 5.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(member, "A", a_received)
        nursery.start_soon(member, "B", b_received)
    return results


def test_members_get_one_union_without_their_own_models_and_craft_the_same(tmp_path):
    a = [arrived("h1", 1.0), arrived("h2", 2.0), arrived("B", 100.0)]  # B: a fellow member
    b = [arrived("h2", 2.0), arrived("h3", 3.0), arrived("A", -100.0)]
    results = trio.run(pool_both, tmp_path, a, b)
    assert [p["b"][0] for p in results["A"]] == [1.0, 2.0, 3.0]  # h1, h2 once, h3
    for x, y in zip(results["A"], results["B"], strict=True):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    crafted = [alie(results[peer], 1.0) for peer in ("A", "B")]
    assert all(np.array_equal(crafted[0][k], crafted[1][k]) for k in crafted[0])
    assert sorted(p.name for p in (tmp_path / "round-4").iterdir()) == [
        "A.safetensors",
        "B.safetensors",
    ]


def test_a_member_that_never_writes_stalls_the_others_no_longer_than_the_wait(tmp_path):
    async def alone():
        began = trio.current_time()
        union = await pooled(tmp_path, 1, "A", [arrived("h1", 1.0)], 3, 0.3)
        return union, trio.current_time() - began

    union, waited = trio.run(alone)
    assert [p["b"][0] for p in union] == [1.0]
    assert 0.3 <= waited < 2.0
