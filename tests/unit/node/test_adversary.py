import numpy as np
import pytest

from node.adversary import forged_params

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
