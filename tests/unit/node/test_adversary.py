import numpy as np
import pytest

from node.adversary import flip_labels, forged_params, tamper_update

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
