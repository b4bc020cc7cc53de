"""Secure-aggregation primitives: rings, masks that cancel, Shamir recovery, sealed shares, and
what a masked model (or colluders short of the threshold) can tell about the model."""

import numpy as np
import pytest
import shamirs
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gossip import masking
from gossip.masking import MODEL_RING, WIDE_RING, MaskingError, ShareError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def members(n: int, seed: int = 0) -> tuple[list[str], dict[str, X25519PrivateKey]]:
    names = [f"peer{i:02d}" for i in range(n)]
    return names, {p: X25519PrivateKey.generate() for p in names}


def seeds_of(me: str, keys: dict[str, X25519PrivateKey], ctx_of) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    def public(p: str) -> bytes:
        return keys[p].public_key().public_bytes_raw()

    return {o: masking.pair_seed(keys[me], public(o), ctx_of(me, o)) for o in keys if o != me}


def pair_ctx(a: str, b: str) -> bytes:
    return masking.context("test", *sorted((a, b)))


@given(st.lists(finite, min_size=1, max_size=40))
def test_model_ring_round_trip_is_within_its_resolution(values):
    x = np.array(values)
    assert np.abs(MODEL_RING.decode(MODEL_RING.encode(x)) - x).max() <= 2.0**-33 * 1.0001


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64,
                          min_value=-1e30, max_value=1e30), min_size=1, max_size=20))  # fmt: skip
def test_wide_ring_sums_float64_values_to_float64_rounding(values):
    x = np.array(values, dtype=np.float64)
    encoded = WIDE_RING.encode(x)
    total = WIDE_RING.zeros(1)
    for e in encoded:
        total = WIDE_RING.add(total, np.array([e], dtype=object))
    exact = sum(masking._exact_fixed(v, WIDE_RING.frac_bits) for v in x) / 2**WIDE_RING.frac_bits
    assert WIDE_RING.decode(total)[0] == exact  # one rounding, at the very end


def test_a_value_outside_the_ring_is_refused():
    with pytest.raises(MaskingError, match="outside this ring's fixed-point range"):
        MODEL_RING.encode(np.array([3e9]))
    with pytest.raises(MaskingError, match="NaN"):
        MODEL_RING.encode(np.array([np.nan]))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 7), length=st.integers(1, 30), data=st.data())
def test_pairwise_masks_cancel_exactly_in_the_sum(n, length, data):
    names, keys = members(n)
    xs = {p: np.array(data.draw(st.lists(finite, min_size=length, max_size=length)))
          for p in names}  # fmt: skip
    for ring in (MODEL_RING, WIDE_RING):
        total = ring.zeros(length)
        for p in names:
            total = ring.add(total, masking.masked(ring, xs[p], p, seeds_of(p, keys, pair_ctx)))
        plain = ring.zeros(length)
        for p in names:
            plain = ring.add(plain, ring.encode(xs[p]))
        assert list(total) == list(plain)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 7), data=st.data())
def test_survivors_seeds_remove_the_masks_of_members_that_dropped(n, data):
    names, keys = members(n)
    dropped = data.draw(st.sets(st.sampled_from(names), max_size=n - 2))
    survivors = [p for p in names if p not in dropped]
    xs = {p: np.arange(5.0) * (i + 1) for i, p in enumerate(names)}
    total = MODEL_RING.zeros(5)
    for p in survivors:
        total = MODEL_RING.add(
            total, masking.masked(MODEL_RING, xs[p], p, seeds_of(p, keys, pair_ctx))
        )
    revealed = [(s, d, seeds_of(s, keys, pair_ctx)[d]) for s in survivors for d in dropped]
    result = MODEL_RING.decode(masking.unmask_pairs(MODEL_RING, total, revealed))
    assert np.abs(result - sum(xs[p] for p in survivors)).max() < 1e-8


@settings(max_examples=40, deadline=None)
@given(holders=st.integers(1, 12), data=st.data())
def test_any_threshold_shares_rebuild_the_secret_and_fewer_do_not(holders, data):
    threshold = data.draw(st.integers(1, holders))
    secret = masking.new_secret()
    shares = masking.split_secret(secret, threshold, holders)
    chosen = data.draw(st.permutations(shares))[:threshold]
    assert masking.combine_shares(chosen, threshold) == secret
    if threshold > 1:
        with pytest.raises(MaskingError, match="distinct shares"):
            masking.combine_shares(chosen[:-1], threshold)
        # t-1 true shares and any forged one give some other secret: the t-1 fix nothing.
        forged = bytes([chosen[-1][0]]) + masking.new_secret()
        assert masking.combine_shares([*chosen[:-1], forged], threshold) != secret


def test_a_sealed_share_opens_only_for_its_holder_and_context():
    alice, bob, eve = (X25519PrivateKey.generate() for _ in range(3))
    pub = {
        k: v.public_key().public_bytes_raw() for k, v in {"a": alice, "b": bob, "e": eve}.items()
    }
    ctx = masking.context("secagg", "share", "agg", 3, "a", "b")
    box = masking.seal_share(alice, pub["b"], ctx, b"s" * 17)
    assert masking.open_share(bob, pub["a"], ctx, box) == b"s" * 17
    altered = box[:-1] + bytes([box[-1] ^ 1])
    for key, sender, context, sealed in [
        (bob, pub["a"], ctx, altered),  # altered on the way
        (eve, pub["a"], ctx, box),  # opened by someone else
        (bob, pub["a"], masking.context("secagg", "share", "agg", 4, "a", "b"), box),  # replayed
        (bob, pub["e"], ctx, box),  # claimed by another sender
    ]:
        with pytest.raises(ShareError, match="does not verify"):
            masking.open_share(key, sender, context, sealed)


def uniform01(encoded: np.ndarray) -> np.ndarray:
    return np.asarray(encoded, np.uint64).astype(np.float64) / 2.0**64


def test_what_a_neighbour_receives_is_indistinguishable_from_noise():
    """A masked model, seen by the aggregator alone: uniform in the ring and uncorrelated with
    the parameters it hides, whatever their scale."""
    names, keys = members(4)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 20_000)
    y = masking.masked(MODEL_RING, x, names[0], seeds_of(names[0], keys, pair_ctx),
                       masking.self_mask_seed(masking.new_secret(), b"self"))  # fmt: skip
    u = uniform01(y)
    assert stats.kstest(u, "uniform").pvalue > 0.001
    assert abs(stats.pearsonr(u, x).statistic) < 0.03
    assert abs(stats.spearmanr(u, x).statistic) < 0.03
    # A model ten times larger looks the same.
    y_big = masking.masked(MODEL_RING, 10 * x, names[0], seeds_of(names[0], keys, pair_ctx),
                           masking.self_mask_seed(masking.new_secret(), b"self"))  # fmt: skip
    assert stats.ks_2samp(u, uniform01(y_big)).pvalue > 0.001


def test_colluders_short_of_the_threshold_learn_nothing_more():
    """The aggregator and one other member (threshold 2 of the 3 others): they hold one share of
    the victim's self-mask and their own pairwise seed with it. Removing all they can still
    leaves a uniform residue, uncorrelated with the victim's model, and their share with any
    guess for the missing one rebuilds a wrong secret."""
    names, keys = members(4)  # the aggregator's neighbours: victim, colluder, two honest
    victim, colluder = names[0], names[1]
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 20_000)
    secret = masking.new_secret()
    self_seed = masking.self_mask_seed(secret, b"self")
    seeds = seeds_of(victim, keys, pair_ctx)
    y = masking.masked(MODEL_RING, x, victim, seeds, self_seed)
    shares = masking.split_secret(secret, 2, 3)
    held = shares[0]  # the colluder's
    residue = masking.unmask_pairs(MODEL_RING, y, [(victim, colluder, seeds[colluder])])
    residue = MODEL_RING.sub(residue, MODEL_RING.encode(x))  # even knowing x: masks remain
    assert stats.kstest(uniform01(residue), "uniform").pvalue > 0.001
    stripped = masking.unmask_pairs(MODEL_RING, y, [(victim, colluder, seeds[colluder])])
    assert abs(stats.pearsonr(uniform01(stripped), x).statistic) < 0.03
    guess = bytes([shares[1][0]]) + masking.new_secret()
    assert masking.combine_shares([held, guess], 2) != secret
    # With the threshold reached, the same view gives the model back: the test can tell.
    rebuilt = masking.combine_shares([held, shares[1]], 2)
    unmasked = MODEL_RING.sub(
        stripped, MODEL_RING.mask(masking.self_mask_seed(rebuilt, b"self"), x.size)
    )
    others = [(victim, o, seeds[o]) for o in names[2:]]
    assert (
        np.abs(MODEL_RING.decode(masking.unmask_pairs(MODEL_RING, unmasked, others)) - x).max()
        < 1e-8
    )


@settings(max_examples=30, deadline=None)
@given(holders=st.integers(2, 20), data=st.data())
def test_combining_rebuilds_what_shamirs_interpolation_rebuilds(holders, data):
    """The cached Lagrange weights give `shamirs.interpolate`'s value for any share subset."""
    threshold = data.draw(st.integers(2, holders))
    shares = data.draw(
        st.permutations(masking.split_secret(masking.new_secret(), threshold, holders))
    )
    chosen = sorted(shares[:threshold])
    points = [
        shamirs.share(s[0], int.from_bytes(s[1:], "big"), masking.SHARE_PRIME) for s in chosen
    ]
    expected = shamirs.interpolate(points, modulus=masking.SHARE_PRIME, threshold=threshold)
    assert masking.combine_shares(chosen, threshold) == int(expected).to_bytes(16, "big")
