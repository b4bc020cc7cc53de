from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import merge as m
from node.config import MERGE_RULE_NAMES, SwarmSection
from node.params import Neighbour

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = m.MergeSettings()


def contribution(value, samples, degree, peer="nb"):
    return Neighbour(peer, {"w": np.array(value, dtype=np.float64)}, samples, degree)


def me(params, samples, degree):
    return Neighbour("me", params, samples, degree)


@st.composite
def connected_graphs(draw):
    n = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 10_000))
    p = draw(st.floats(0.2, 1.0))
    g = nx.gnp_random_graph(n, p, seed=seed)
    # Add a spanning path so the graph is always connected.
    g.add_edges_from((i, i + 1) for i in range(n - 1))
    samples = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n))
    return g, samples, values


def mixing_matrix(g, samples):
    n = g.number_of_nodes()
    w = np.zeros((n, n))
    for i in range(n):
        nbrs = sorted(g.neighbors(i))
        self_w, ws = m.metropolis_weights(
            samples[i], g.degree(i), [contribution(0.0, samples[j], g.degree(j)) for j in nbrs]
        )
        w[i, i] = self_w
        w[i, nbrs] = ws
    return w


@settings(max_examples=80, deadline=None)
@given(connected_graphs())
def test_metropolis_is_row_stochastic_with_detailed_balance_in_sample_counts(case):
    g, samples, _ = case
    w = mixing_matrix(g, samples)
    assert (w >= -1e-12).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    flow = np.array(samples)[:, None] * w
    np.testing.assert_allclose(flow, flow.T, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(connected_graphs())
def test_one_merge_on_every_node_is_one_step_of_the_mixing_matrix(case):
    g, samples, values = case
    x = [np.array([v]) for v in values]
    merged = [
        m.merge_metropolis(
            me({"w": x[i]}, samples[i], g.degree(i)),
            [contribution(x[j], samples[j], g.degree(j), f"n{j}") for j in sorted(g[i])],
            DEFAULTS,
        )["w"][0]
        for i in g.nodes
    ]
    np.testing.assert_allclose(merged, mixing_matrix(g, samples) @ np.array(values), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(connected_graphs())
def test_repeated_mixing_reaches_the_sample_weighted_average(case):
    """W^t -> 1 pi^T with pi proportional to the sample counts: every node ends at the
    sample-weighted average. Squaring reaches t = 2^40 cheaply, enough even when sample counts
    differ a thousandfold and mixing is slow."""
    g, samples, _ = case
    power = mixing_matrix(g, samples)
    for _ in range(40):
        power = power @ power
        power /= power.sum(axis=1, keepdims=True)  # rows sum to 1 exactly; drop rounding drift
    pi = np.array(samples) / sum(samples)
    np.testing.assert_allclose(power, np.tile(pi, (len(samples), 1)), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(connected_graphs())
def test_one_mixing_step_preserves_the_weighted_mean(case):
    g, samples, values = case
    w = mixing_matrix(g, samples)
    x = np.array(values)
    n = np.array(samples, dtype=float)
    assert np.dot(n, w @ x) == pytest.approx(np.dot(n, x), rel=1e-9, abs=1e-6)


def test_missing_neighbour_weight_stays_on_self():
    own = {"w": np.array([1.0])}
    full = m.metropolis_weights(10, 2, [contribution(0, 10, 2), contribution(0, 10, 2)])
    partial = m.metropolis_weights(10, 2, [contribution(0, 10, 2)])
    assert partial[0] == pytest.approx(full[0] + full[1][1])
    assert m.merge_metropolis(me(own, 10, 2), [], DEFAULTS)["w"][0] == 1.0


def test_weights_keep_dtype_and_accumulate_in_float64():
    own = {"w": np.full(3, 1e-3, np.float32)}
    out = m.merge("metropolis", me(own, 5, 1), [Neighbour("nb", own, 5, 1)], DEFAULTS)
    assert out["w"].dtype == np.float32
    np.testing.assert_allclose(out["w"], 1e-3, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=9))
def test_robust_rules_stay_within_the_range_of_the_inputs(values):
    own = {"w": np.array([values[0]])}
    nbs = [contribution([v], 1, 1) for v in values[1:]]
    for rule in ("median", "trimmed_mean"):
        out = m.merge(rule, me(own, 1, 1), nbs, DEFAULTS)["w"][0]
        assert min(values) - 1e-6 <= out <= max(values) + 1e-6


def test_median_and_trimmed_mean_ignore_one_outlier():
    own = {"w": np.array([1.0])}
    nbs = [
        contribution([1.1], 1, 4),
        contribution([0.9], 1, 4),
        contribution([1e9], 1, 4),
        contribution([1.0], 1, 4),
    ]
    assert m.merge("median", me(own, 1, 4), nbs, DEFAULTS)["w"][0] == pytest.approx(1.0)
    trimmed = m.merge("trimmed_mean", me(own, 1, 4), nbs, m.MergeSettings(trim_fraction=0.2))
    assert trimmed["w"][0] == pytest.approx(1.0333333, rel=1e-5)
    with pytest.raises(ValueError, match="unknown merge rule"):
        m.merge("mean", me(own, 1, 4), nbs, DEFAULTS)


def test_invalid_sample_count_is_refused():
    with pytest.raises(ValueError):
        m.metropolis_weights(0, 1, [])


def test_every_rule_is_a_config_choice_and_documented():
    """The table is the one list: the config's Literal (static for pydantic) names exactly its
    rules, the first is the config's default, and the README describes each."""
    assert tuple(m.MERGE_RULES) == MERGE_RULE_NAMES
    assert SwarmSection().merge == next(iter(m.MERGE_RULES))
    readme = (ROOT / "README.md").read_text()
    for rule in m.MERGE_RULES:
        assert f"`{rule}`" in readme, f"merge rule {rule!r} is not described in README.md"
