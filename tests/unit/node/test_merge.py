import dataclasses
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import merge as m
from node.config import (
    MERGE_RULE_NAMES,
    SECURE_AGGREGATION_RULES,
    SwarmSection,
    byzantine_problem,
)
from node.params import Neighbour

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = m.MergeSettings()


def contribution(value, samples, degree, peer="nb", mass=0):
    return Neighbour(peer, {"w": np.array(value, dtype=np.float64)}, samples, degree, mass)


def me(params, samples, degree, mass=0):
    return Neighbour("me", params, samples, degree, mass)


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


def masses(g, samples, known=None):
    """Each node's closed-neighbourhood sample count, or 0 where `known` says it has not heard
    from every neighbour yet."""
    known = known if known is not None else [True] * g.number_of_nodes()
    return [samples[i] + sum(samples[j] for j in g[i]) if known[i] else 0 for i in g.nodes]


def mixing_matrix(g, samples, rule="metropolis", known=None):
    """The matrix one merge on every node applies, as each node's own weights give it."""
    n = g.number_of_nodes()
    mass = masses(g, samples, known if known is not None else [rule in m.MASS_RULES] * n)
    w = np.zeros((n, n))
    for i in range(n):
        nbrs = sorted(g.neighbors(i))
        own = me({}, samples[i], g.degree(i), mass[i])
        arrived = [contribution(0.0, samples[j], g.degree(j), mass=mass[j]) for j in nbrs]
        self_w, ws = m.pair_weights(m.PAIR_WEIGHTS[rule], own, arrived)
        w[i, i] = self_w
        w[i, nbrs] = ws
    return w


@st.composite
def knowledge(draw):
    """A connected graph, and which nodes know their mass yet (any mix of them)."""
    g, samples, values = draw(connected_graphs())
    known = draw(st.lists(st.booleans(), min_size=len(samples), max_size=len(samples)))
    return g, samples, values, known


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


@settings(max_examples=100, deadline=None)
@given(knowledge())
def test_neighbourhood_is_row_stochastic_with_detailed_balance_whoever_knows_its_mass(case):
    """Nonnegative, rows summing to 1, n_i w_ij = n_j w_ji, and every self weight at least
    n_i / S_i where the mass is known (1 / (1 + d_i)'s complement where not)."""
    g, samples, _, known = case
    w = mixing_matrix(g, samples, "neighbourhood", known)
    assert (w >= -1e-12).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    flow = np.array(samples)[:, None] * w
    np.testing.assert_allclose(flow, flow.T, atol=1e-9)
    for i, mass in enumerate(masses(g, samples, known)):
        floor = samples[i] / mass if mass else 1 / (1 + g.degree(i))
        assert w[i, i] >= floor - 1e-12


@settings(max_examples=60, deadline=None)
@given(connected_graphs())
def test_neighbourhood_without_any_mass_known_is_metropolis(case):
    g, samples, _ = case
    unknown = [False] * len(samples)
    np.testing.assert_allclose(
        mixing_matrix(g, samples, "neighbourhood", unknown), mixing_matrix(g, samples), atol=1e-15
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 10_000), min_size=2, max_size=20),
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=20, max_size=20),
)
def test_on_a_complete_graph_one_merge_gives_every_node_the_sample_weighted_average(
    samples, values
):
    """FedAvg with no server: S_i is the swarm's total everywhere, so w_ij = n_j / S. Metropolis
    does not do it with unequal counts (the last assertion: the test can tell them apart)."""
    n = len(samples)
    g = nx.complete_graph(n)
    x = np.array(values[:n])
    target = np.dot(samples, x) / sum(samples)
    mass = masses(g, samples)
    for i in g.nodes:
        merged = m.merge(
            "neighbourhood",
            me({"w": np.array([x[i]])}, samples[i], n - 1, mass[i]),
            [contribution([x[j]], samples[j], n - 1, f"n{j}", mass[j]) for j in g[i]],
            DEFAULTS,
        )["w"][0]
        assert merged == pytest.approx(target, rel=1e-9, abs=1e-9)
    if len(set(samples)) > 1 and np.ptp(x) > 1e-3:
        after = mixing_matrix(g, samples) @ x
        assert np.ptp(after) > 1e-9, "metropolis should leave the nodes apart"


def test_a_matching_round_averages_each_pair_exactly():
    """With a rotation of matchings a node has one partner a round: S_i = S_j = n_i + n_j, and
    both ends land on the pair's weighted average."""
    a, b = me({"w": np.array([1.0])}, 30, 1, 130), contribution([5.0], 100, 1, "b", 130)
    merged = m.merge("neighbourhood", a, [b], DEFAULTS)["w"][0]
    assert merged == pytest.approx((30 * 1.0 + 100 * 5.0) / 130)


@settings(max_examples=60, deadline=None)
@given(knowledge())
def test_repeated_neighbourhood_mixing_reaches_the_sample_weighted_average(case):
    g, samples, _, known = case
    power = mixing_matrix(g, samples, "neighbourhood", known)
    for _ in range(40):
        power = power @ power
        power /= power.sum(axis=1, keepdims=True)
    pi = np.array(samples) / sum(samples)
    np.testing.assert_allclose(power, np.tile(pi, (len(samples), 1)), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(knowledge())
def test_one_neighbourhood_merge_on_every_node_is_one_step_of_its_matrix(case):
    g, samples, values, known = case
    mass = masses(g, samples, known)
    merged = [
        m.merge(
            "neighbourhood",
            me({"w": np.array([values[i]])}, samples[i], g.degree(i), mass[i]),
            [
                contribution([values[j]], samples[j], g.degree(j), f"n{j}", mass[j])
                for j in sorted(g[i])
            ],
            DEFAULTS,
        )["w"][0]
        for i in g.nodes
    ]
    expected = mixing_matrix(g, samples, "neighbourhood", known) @ np.array(values)
    np.testing.assert_allclose(merged, expected, atol=1e-9)


def test_a_neighbour_claiming_more_samples_than_counted_cannot_take_the_self_weight():
    """S_i = 10 + 10 + 10 counted the neighbours at 10 each; one now claims 10**6 (and a tiny
    mass of its own): the neighbours' total is capped at 1 - n_i / S_i."""
    own = me({"w": np.array([0.0])}, 10, 2, 30)
    honest = contribution([1.0], 10, 2, "a", 30)
    liar = contribution([1.0], 10**6, 2, "b", 10**6)
    self_w, ws = m.pair_weights(m.neighbourhood_weight, own, [honest, liar])
    assert self_w == pytest.approx(10 / 30)
    assert all(w >= 0 for w in ws)
    self_w, ws = m.pair_weights(m.neighbourhood_weight, own, [honest, honest])
    assert self_w == pytest.approx(10 / 30) and ws == pytest.approx([1 / 3, 1 / 3])  # no cap


def test_a_missing_neighbour_s_weight_stays_on_self_under_neighbourhood():
    own = me({"w": np.array([1.0])}, 10, 2, 60)
    full = m.pair_weights(m.neighbourhood_weight, own, [contribution(0, 20, 2, "a", 60)] * 2)
    partial = m.pair_weights(m.neighbourhood_weight, own, [contribution(0, 20, 2, "a", 60)])
    assert partial[0] == pytest.approx(full[0] + full[1][1])


def test_the_weighted_rules_are_the_ones_secure_aggregation_allows():
    assert tuple(m.PAIR_WEIGHTS) == SECURE_AGGREGATION_RULES
    assert set(m.PAIR_WEIGHTS) <= set(m.MERGE_RULES)
    assert set(m.PAIR_WEIGHTS) >= m.MASS_RULES


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


# -- Byzantine-robust rules -----------------------------------------------------------------
# Inputs: the node's own model (honest) and its arrived neighbours, of which at most f
# (`swarm.byzantine`) are Byzantine and may hold anything, in any order, with any claims.

FEWEST_MODELS = {  # n = 1 + arrived, per rule, for f Byzantine
    "krum": lambda f: 2 * f + 3,
    "multi_krum": lambda f: 2 * f + 3,
    "bulyan": lambda f: 4 * f + 3,
    "clipped_gossip": lambda f: f + 2,
    "ubar": lambda f: f + 2,
}
ROBUST = tuple(FEWEST_MODELS)
honest_values = st.floats(-10, 10, allow_nan=False)
byzantine_values = st.floats(-1e4, 1e4, allow_nan=False)


@st.composite
def byzantine_rounds(draw, rule, far=False):
    """(own, neighbours, honest matrix, f, settings): f <= 2 Byzantine assumed, b <= f present,
    n within the rule's bound; honest rows in [-10, 10], Byzantine anywhere in [-1e4, 1e4] (or,
    with `far`, beyond 1e5); each neighbour claims 1 to 10**6 rows and 1 to 10 partners."""
    f = draw(st.integers(0, 2))
    b = draw(st.integers(0, f))
    fewest = FEWEST_MODELS[rule](f)
    n = draw(st.integers(max(fewest, b + 1), fewest + 3))
    own, nbs, honest = draw(_byzantine_inputs(n, b, far))
    tau = draw(st.sampled_from([0.0, 0.5, 3.0]))
    alpha = draw(st.sampled_from([0.0, 0.5, 0.9]))
    config = m.MergeSettings(byzantine=f, clip_radius=tau, self_weight=alpha,
                             loss=quadratic_loss(honest.mean(axis=0)))  # fmt: skip
    return own, nbs, honest, f, config


def quadratic_loss(centre):
    """A convex stand-in for a model's loss on the node's rows: squared distance to `centre`."""
    return lambda params: float(((params["w"] - centre) ** 2).sum())


@st.composite
def _byzantine_inputs(draw, n, b, far=False):
    """(own, neighbours, honest matrix): n models, the last b of the neighbours Byzantine."""
    p = draw(st.integers(1, 3))
    honest = np.array(draw(st.lists(st.lists(honest_values, min_size=p, max_size=p),
                                    min_size=n - b, max_size=n - b)))  # fmt: skip
    byz = np.array(draw(st.lists(st.lists(byzantine_values, min_size=p, max_size=p),
                                 min_size=b, max_size=b))).reshape(b, p)  # fmt: skip
    if far:
        byz = 1e5 + np.abs(byz)
    rows = [*honest[1:], *byz]
    peers = draw(st.permutations([f"p{k:02d}" for k in range(n - 1)]))
    claims = st.tuples(st.integers(1, 10**6), st.integers(1, 10))
    nbs = []
    for peer, row in zip(peers, rows, strict=True):
        samples, degree = draw(claims)
        nbs.append(Neighbour(peer, {"w": row}, samples, degree))
    own = me({"w": honest[0]}, draw(st.integers(1, 1000)), n - 1 + draw(st.integers(0, 2)))
    return own, nbs, honest


COORDINATEWISE = ("median", "trimmed_mean")


@st.composite
def coordinatewise_rounds(draw, rule):
    """(own, neighbours, honest matrix, f, settings) for median or trimmed mean: f <= 3
    Byzantine assumed, b <= f present, any trim share, and n models such that the config admits
    f for a node with n - 1 neighbours (`byzantine_problem`: median n >= 2f + 1, trimmed mean
    floor(trim n) >= f): the bound the config holds every node to."""
    f = draw(st.integers(0, 3))
    b = draw(st.integers(0, f))
    trim = draw(st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.4, 0.45]))
    swarm = SwarmSection(merge=rule, byzantine=f, trim_fraction=trim)
    fewest = next(k for k in range(b + 1, 200) if byzantine_problem(swarm, k - 1, "") is None)
    n = draw(st.integers(fewest, fewest + 4))
    own, nbs, honest = draw(_byzantine_inputs(n, b))
    return own, nbs, honest, f, m.MergeSettings(byzantine=f, trim_fraction=trim)


def _honest_diameter(honest):
    return max(np.linalg.norm(a - b) for a in honest for b in honest)


def assert_within_honest_range(out, honest, slack=1e-9):
    """Every coordinate of `out` within the honest inputs' coordinate-wise range, +- `slack`."""
    low, high = honest.min(axis=0), honest.max(axis=0)
    assert (out >= low - slack).all() and (out <= high + slack).all()


@pytest.mark.parametrize(
    ("rule", "rounds"),
    [(r, byzantine_rounds) for r in ROBUST] + [(r, coordinatewise_rounds) for r in COORDINATEWISE],
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_robust_rules_ignore_the_order_neighbours_arrive_in(rule, rounds, data):
    own, nbs, _, _, config = data.draw(rounds(rule))
    shuffled = data.draw(st.permutations(nbs))
    assert np.array_equal(m.merge(rule, own, nbs, config)["w"],
                          m.merge(rule, own, shuffled, config)["w"])  # fmt: skip


@pytest.mark.parametrize("rule", COORDINATEWISE)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_median_and_trimmed_mean_stay_within_the_honest_range_under_the_bound(rule, data):
    """Per coordinate the k-th smallest of n values, b of them Byzantine, lies within the
    honest values' range for b <= k <= n - b - 1: the median's middle value(s) (n >= 2f + 1)
    and every value trimmed mean keeps (k = floor(trim n) >= f dropped at each end) are such
    order statistics, so their mean is too, wherever the Byzantine values are."""
    own, nbs, honest, _, config = data.draw(coordinatewise_rounds(rule))
    out = m.merge(rule, own, nbs, config)["w"]
    assert_within_honest_range(out, honest, slack=1e-9 * (1 + np.abs(honest).max()))


def test_past_the_bound_a_byzantine_majority_takes_the_median_and_the_trimmed_mean_out():
    """The bound is what the honest range rests on: with f + 1 values beyond it (median: 3 of 5;
    trimmed mean, trim 0.2 of 5: 2 where 1 is dropped) the output leaves the honest range."""
    own = me({"w": np.array([0.0])}, 1, 4)
    nbs = [contribution([v], 1, 4, f"p{i}") for i, v in enumerate([1.0, 1e3, 1e3, 1e3])]
    assert m.merge("median", own, nbs, DEFAULTS)["w"][0] == 1e3
    nbs = [contribution([v], 1, 4, f"p{i}") for i, v in enumerate([1.0, 0.5, 1e3, 1e3])]
    trimmed = m.merge("trimmed_mean", own, nbs, m.MergeSettings(trim_fraction=0.2))["w"][0]
    assert trimmed > 1.0


@settings(max_examples=150, deadline=None)
@given(byzantine_rounds("krum"))
def test_krum_picks_an_input_no_farther_from_an_honest_one_than_the_honest_spread_allows(case):
    """Krum's score of an honest model is at most k D^2 (k = n - f - 2 nearest, D the honest
    inputs' diameter: it has more than k honest others), and a Byzantine winner has an honest
    model among its k nearest: the pick is honest or within sqrt(k) D of an honest input."""
    own, nbs, honest, f, config = case
    out = m.merge("krum", own, nbs, config)["w"]
    inputs = [own.params["w"], *(nb.params["w"] for nb in nbs)]
    assert any(np.array_equal(out, x) for x in inputs)
    k = len(inputs) - f - 2
    nearest_honest = min(np.linalg.norm(out - h) for h in honest)
    assert nearest_honest <= np.sqrt(k) * _honest_diameter(honest) * (1 + 1e-9) + 1e-9


@settings(max_examples=100, deadline=None)
@given(byzantine_rounds("krum", far=True))
def test_krum_picks_an_honest_input_when_the_byzantine_ones_are_far(case):
    own, nbs, honest, _, config = case
    out = m.merge("krum", own, nbs, config)["w"]
    assert any(np.array_equal(out, h) for h in honest)


@pytest.mark.parametrize("rule", ["multi_krum", "bulyan", "ubar"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_averaging_robust_rules_stay_in_the_honest_range_when_the_byzantine_ones_are_far(
    rule, data
):
    """Multi-Krum averages, Bulyan averages and UBAR merges honest models only."""
    own, nbs, honest, _, config = data.draw(byzantine_rounds(rule, far=True))
    out = m.merge(rule, own, nbs, config)["w"]
    assert_within_honest_range(out, honest)


@settings(max_examples=150, deadline=None)
@given(byzantine_rounds("multi_krum"), st.integers(0, 5))
def test_multi_krum_stays_within_sqrt_k_honest_diameters_of_the_honest_box(case, m_setting):
    """Each of the m <= n - f picks scores no worse than the m-th honest model, so (as for
    Krum) lies within sqrt(k) D of an honest input: every coordinate of their mean is within
    sqrt(k) D of the honest inputs' coordinate-wise range."""
    own, nbs, honest, f, config = case
    config = dataclasses.replace(config, multi_krum_m=m_setting)
    out = m.merge("multi_krum", own, nbs, config)["w"]
    slack = np.sqrt(len(nbs) + 1 - f - 2) * _honest_diameter(honest) * (1 + 1e-9) + 1e-9
    assert_within_honest_range(out, honest, slack)


def test_multi_krum_averages_the_m_best_scored():
    own = me({"w": np.array([0.0])}, 1, 4)
    nbs = [contribution([v], 1, 4, f"p{v}") for v in (1.0, 2.0, 3.0, 100.0)]
    # f = 1: k = 2 nearest; scores 0: 1+4, 1: 1+1, 2: 1+1, 3: 1+4, 100: 97^2+98^2.
    out = m.merge("multi_krum", own, nbs, m.MergeSettings(byzantine=1, multi_krum_m=2))
    assert out["w"][0] == pytest.approx(1.5)
    out = m.merge("multi_krum", own, nbs, m.MergeSettings(byzantine=1))  # m = n - f = 4
    assert out["w"][0] == pytest.approx(1.5)


@settings(max_examples=150, deadline=None)
@given(byzantine_rounds("bulyan"))
def test_bulyan_stays_within_the_honest_range_widened_by_its_width(case):
    """Per coordinate: the median of the theta picks lies in the honest range (more than half
    of them are honest), and the beta values averaged are no farther from it than the farthest
    honest pick, so the output is within [min - W, max + W], W = max - min of the honest."""
    own, nbs, honest, _, config = case
    out = m.merge("bulyan", own, nbs, config)["w"]
    assert_within_honest_range(out, honest, slack=np.ptp(honest, axis=0) * (1 + 1e-9) + 1e-9)


def test_bulyan_with_one_byzantine_of_seven():
    """n = 7, f = 1: theta = 5 picks by Krum (the outlier never), beta = 3 nearest the median."""
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    own = me({"w": np.array([values[0]])}, 1, 6)
    nbs = [contribution([v], 1, 6, f"p{i}") for i, v in enumerate([*values[1:], 1e6])]
    out = m.merge("bulyan", own, nbs, m.MergeSettings(byzantine=1))["w"][0]
    assert 1.0 <= out <= 4.0


@settings(max_examples=150, deadline=None)
@given(byzantine_rounds("clipped_gossip"))
def test_clipped_gossip_moves_at_most_tau_times_the_neighbours_weight(case):
    """Whatever arrives: |out - own| <= tau * sum_j w_ij, each w_ij <= 1 / (1 + d_i) (the
    Metropolis weight, whatever the neighbour claims). With the adaptive tau and at most f
    Byzantine neighbours, tau is no more than the farthest honest neighbour's distance."""
    own, nbs, honest, f, config = case
    out = m.merge("clipped_gossip", own, nbs, config)["w"]
    x = own.params["w"]
    _, weights = m.metropolis_weights(own.samples, own.degree, nbs)
    assert all(w <= 1 / (1 + own.degree) + 1e-12 for w in weights)
    farthest_honest = max((np.linalg.norm(h - x) for h in honest[1:]), default=0.0)
    tau = config.clip_radius or farthest_honest
    assert np.linalg.norm(out - x) <= tau * sum(weights) * (1 + 1e-9) + 1e-9


@settings(max_examples=60, deadline=None)
@given(byzantine_rounds("clipped_gossip"))
def test_clipped_gossip_is_metropolis_when_every_neighbour_is_within_tau(case):
    own, nbs, _, _, config = case
    x = own.params["w"]
    radius = max(np.linalg.norm(nb.params["w"] - x) for nb in nbs) + 1.0
    out = m.merge("clipped_gossip", own, nbs, m.MergeSettings(clip_radius=radius))["w"]
    plain = m.merge("metropolis", own, sorted(nbs, key=lambda nb: nb.peer), DEFAULTS)["w"]
    np.testing.assert_allclose(out, plain, rtol=1e-9, atol=1e-9)


def test_the_adaptive_radius_is_the_f_plus_first_largest_distance():
    distances = np.array([1.0, 5.0, 3.0, 100.0])
    assert m.adaptive_radius(distances, 0) == 100.0
    assert m.adaptive_radius(distances, 1) == 5.0
    assert m.adaptive_radius(distances, 2) == 3.0
    assert m.adaptive_radius(distances, 4) == 0.0  # none need be honest: stay put


@pytest.mark.parametrize("rule", ROBUST)
def test_a_round_with_fewer_arrivals_than_the_bound_keeps_the_own_model(rule):
    own = me({"w": np.array([1.0, 2.0], np.float32)}, 10, 4)
    nbs = [contribution([50.0, 60.0], 10, 4, "a")]  # n = 2 models: below every bound for f = 1
    out = m.merge(rule, own, nbs, m.MergeSettings(byzantine=1, loss=quadratic_loss(0.0)))
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], own.params["w"])
    assert out["w"] is not own.params["w"]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_ubar_never_leaves_the_node_worse_on_its_rows_than_its_own_or_best_screened_model(data):
    """However many neighbours are Byzantine (f assumed, any number present): with a convex
    loss the merge, a convex combination of the own model and models no worse than it (or the
    one best of the d - f nearest), is no worse than the worse of those two."""
    f = data.draw(st.integers(0, 2))
    n = data.draw(st.integers(f + 2, f + 6))
    b = data.draw(st.integers(0, n - 1))
    own, nbs, honest = data.draw(_byzantine_inputs(n, b))
    centre = np.array(data.draw(st.lists(honest_values, min_size=honest.shape[1],
                                         max_size=honest.shape[1])))  # fmt: skip
    loss = quadratic_loss(centre)
    alpha = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.9]))
    out = m.merge("ubar", own, nbs, m.MergeSettings(byzantine=f, self_weight=alpha, loss=loss))
    x = own.params["w"]
    nearest = sorted(nbs, key=lambda nb: ((nb.params["w"] - x) ** 2).sum())[: len(nbs) - f]
    best = min(loss(nb.params) for nb in nearest)
    bound = max(loss(own.params), best)
    assert loss(out) <= bound * (1 + 1e-9) + 1e-9


def test_ubar_keeps_out_models_worse_on_its_rows_beyond_f():
    """Three of four neighbours Byzantine, f = 1: the distance stage drops one, the loss stage
    the two others, which do worse on the node's rows than its own model."""
    own = me({"w": np.array([0.0])}, 1, 4)
    nbs = [contribution([v], 1, 4, f"p{i}") for i, v in enumerate([0.5, -1.0, -1.1, -9.0])]
    settings_ = m.MergeSettings(byzantine=1, self_weight=0.5, loss=quadratic_loss(0.4))
    assert m.merge("ubar", own, nbs, settings_)["w"][0] == pytest.approx(0.25)
    # No neighbour as good as the own model: the best of the d - f nearest, half and half.
    settings_ = m.MergeSettings(byzantine=1, self_weight=0.5, loss=quadratic_loss(-0.2))
    assert m.merge("ubar", own, nbs, settings_)["w"][0] == pytest.approx(0.25)
    # Every one of the nearest no worse than the own model is averaged in: here -1.0 and -1.1.
    settings_ = m.MergeSettings(byzantine=1, self_weight=0.5, loss=quadratic_loss(-0.6))
    assert m.merge("ubar", own, nbs, settings_)["w"][0] == pytest.approx(-0.525)
    # The distance stage drops the farthest even when it fits the rows best (5.0, centre 4.0).
    nbs = [contribution([v], 1, 4, f"p{i}") for i, v in enumerate([0.5, -1.0, -1.1, 5.0])]
    settings_ = m.MergeSettings(byzantine=1, self_weight=0.5, loss=quadratic_loss(4.0))
    assert m.merge("ubar", own, nbs, settings_)["w"][0] == pytest.approx(0.25)


def test_ubar_counts_a_nan_loss_as_the_worst_and_needs_a_loss():
    own = me({"w": np.array([0.0])}, 1, 2)
    nbs = [contribution([1.0], 1, 2, "a"), contribution([2.0], 1, 2, "b")]
    losses = {0.0: 1.0, 1.0: float("nan"), 2.0: 3.0}
    settings_ = m.MergeSettings(self_weight=0.5, loss=lambda p: losses[float(p["w"][0])])
    assert m.merge("ubar", own, nbs, settings_)["w"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss"):
        m.merge("ubar", own, nbs, m.MergeSettings())
