"""cnn_core.augmentation: the warp is exact on whole shifts, flips and quarter turns; the draws
are keyed by seed and iteration and cut by shard; the spec is checked and normalized."""

import numpy as np
import pytest

from cnn_core import ConfigError
from cnn_core.augmentation import Augmentation, warp
from cnn_core.noise import StepNoise


def test_warp_moves_rotates_and_flips_exactly():
    rng = np.random.default_rng(0)
    X = rng.random((3, 2, 5, 7))
    none = np.zeros(3)
    assert np.array_equal(warp(X, none, np.zeros((3, 2)), none.astype(bool)), X)
    shifted = warp(X, none, np.array([[1, -2]] * 3), none.astype(bool))  # down 1, left 2
    assert np.array_equal(shifted[:, :, 1:, :-2], X[:, :, :-1, 2:])
    assert not shifted[:, :, 0].any() and not shifted[:, :, :, -2:].any()
    flipped = warp(X, none, np.zeros((3, 2)), np.array([True, False, True]))
    assert np.array_equal(flipped[[0, 2]], X[[0, 2], :, :, ::-1]) and np.array_equal(
        flipped[1], X[1]
    )
    square = rng.random((2, 1, 6, 6))
    quarter = warp(square, np.full(2, np.pi / 2), np.zeros((2, 2)), np.zeros(2, bool))
    np.testing.assert_allclose(quarter, np.rot90(square, -1, axes=(2, 3)), atol=1e-12)


def test_augmentation_draws_are_keyed_by_seed_and_iteration_and_cut_by_shard():
    aug = Augmentation.from_spec({"shift": 2, "rotate": 10})
    assert Augmentation.from_spec({"shift": 0}) is None
    X = np.random.default_rng(1).random((8, 1, 10, 10)).astype(np.float32)
    whole = aug.apply(X, StepNoise(0, 5, 0, 8))
    assert whole.dtype == np.float32 and whole.shape == X.shape and not np.allclose(whole, X)
    assert np.array_equal(aug.apply(X, StepNoise(0, 5, 0, 8)), whole)
    assert not np.array_equal(aug.apply(X, StepNoise(0, 6, 0, 8)), whole)
    assert np.array_equal(aug.apply(X[3:], StepNoise(0, 5, 3, 8)), whole[3:])


def test_a_spec_round_trips_and_all_off_is_no_augmentation():
    aug = Augmentation.from_spec({"shift": 3, "rotate": 15, "flip": True})
    assert aug == Augmentation(3, 15.0, True) and isinstance(aug.rotate, float)
    assert Augmentation.from_spec(aug.spec()) == aug
    assert Augmentation.from_spec(None) is None
    assert Augmentation.from_spec({}) is None
    assert Augmentation.from_spec({"shift": 0, "rotate": 0.0, "flip": False}) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ([2], r"^augmentation must be an object like \{'shift': 2, 'rotate': 10\}, got \[2\]$"),
        (
            {"zoom": 2},
            r"^augmentation: unknown field\(s\) \['zoom'\] \(allowed: shift, rotate, flip\)$",
        ),
        ({"shift": 65}, r"^augmentation: shift must be in \[0, 64\], got 65$"),
        ({"shift": True}, r"^augmentation: shift must be an integer, got True$"),
        ({"rotate": -1}, r"^augmentation: rotate must be in \[0, 180\], got -1$"),
        ({"flip": 1}, r"^augmentation: flip must be true or false, got 1$"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        Augmentation.from_spec(spec)
