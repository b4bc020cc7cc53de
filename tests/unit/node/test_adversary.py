from statistics import NormalDist

import numpy as np
import pytest

from node.adversary import alie, alie_z, flip_labels, forged_params, ipm, tamper_update

PREVIOUS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(1, np.float32)}
INITIAL = {"w": np.full((2, 3), 0.5, np.float32), "b": np.zeros(1, np.float32)}


@pytest.mark.parametrize("mode", ["replay", "stale", "zeros", "noise"])
def test_forged_parameters_keep_names_shapes_and_dtypes(mode):
    forged = forged_params(mode, PREVIOUS, INITIAL, np.random.default_rng(0), 1.0)
    assert {k: (v.shape, v.dtype) for k, v in forged.items()} == {
        k: (v.shape, v.dtype) for k, v in PREVIOUS.items()
    }


def test_each_mode_publishes_what_its_name_says():
    rng = np.random.default_rng(0)
    replay = forged_params("replay", PREVIOUS, INITIAL, rng, 1.0)
    np.testing.assert_array_equal(replay["w"], PREVIOUS["w"])
    assert replay["w"] is not PREVIOUS["w"]  # a copy: the node's model may change under it
    np.testing.assert_array_equal(forged_params("stale", PREVIOUS, INITIAL, rng, 1.0)["w"], 0.5)
    assert not forged_params("zeros", PREVIOUS, INITIAL, rng, 1.0)["w"].any()
    noise = forged_params("noise", PREVIOUS, INITIAL, rng, 3.0)["w"]
    assert 0.5 < noise.std() < 10 and not np.allclose(noise, PREVIOUS["w"])
    with pytest.raises(ValueError, match="unknown adversary mode"):
        forged_params("sign_flip", PREVIOUS, INITIAL, rng, 1.0)


def test_label_flip_flips_exactly_the_asked_share():
    y = np.array([0, 1] * 50)
    flipped = flip_labels(y, 0.3, np.random.default_rng(1))
    assert (flipped != y).sum() == 30
    assert set(np.unique(flipped)) <= {0, 1}
    np.testing.assert_array_equal(flip_labels(y, 1.0, np.random.default_rng(1)), 1 - y)


def test_a_tampered_update_is_negated_or_noisy_around_the_previous_model():
    trained = {k: v + 1.0 for k, v in PREVIOUS.items()}
    flipped = tamper_update(PREVIOUS, trained, True, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(flipped["w"], PREVIOUS["w"] - 1.0)
    assert flipped["w"].dtype == np.float32
    noisy = tamper_update(PREVIOUS, trained, False, 0.5, np.random.default_rng(0))
    residual = noisy["w"] - trained["w"]
    assert residual.std() > 0.1 and abs(residual.mean()) < 1.0


RECEIVED = [
    {"w": np.array([[1, 2, 3], [0, 0, 0]], np.float32), "b": np.array([1], np.float32)},
    {"w": np.array([[3, 2, 1], [2, 0, 4]], np.float32), "b": np.array([5], np.float32)},
    {"w": np.array([[2, 8, 2], [1, 0, 2]], np.float32), "b": np.array([3], np.float32)},
]


def test_alie_publishes_the_mean_minus_z_stds_of_the_received_models():
    crafted = alie(RECEIVED, 1.5)
    for name in ("w", "b"):
        stack = np.stack([p[name].astype(np.float64) for p in RECEIVED])
        expected = stack.mean(axis=0) - 1.5 * stack.std(axis=0)
        np.testing.assert_allclose(crafted[name], expected, rtol=1e-6)
        assert crafted[name].dtype == np.float32
    np.testing.assert_array_equal(alie(RECEIVED[:1], 2.0)["w"], RECEIVED[0]["w"])  # no spread


def test_alie_z_follows_the_paper():
    """s = floor(n/2 + 1) - f, z = Phi^-1((n - s) / n): Baruch et al.'s n = 50, f = 12 gives
    s = 14, z = Phi^-1(0.72) ~ 0.58; with half the models honest only, z = 0."""
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(5, 1) == pytest.approx(NormalDist().inv_cdf(3 / 5))
    assert alie_z(4, 1) == pytest.approx(0.0)
    assert alie_z(3, 3) == pytest.approx(NormalDist().inv_cdf(2 / 3))  # s kept at 1


def test_ipm_publishes_minus_epsilon_times_the_mean_update_of_the_received_models():
    base = {"w": np.full((2, 3), 1.0, np.float32), "b": np.zeros(1, np.float32)}
    crafted = ipm(PREVIOUS, RECEIVED, base, 0.5)
    for name in ("w", "b"):
        updates = np.stack([p[name] - base[name] for p in RECEIVED]).astype(np.float64)
        np.testing.assert_allclose(crafted[name] - PREVIOUS[name], -0.5 * updates.mean(axis=0))
        assert crafted[name].dtype == np.float32
