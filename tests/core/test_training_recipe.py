"""Training with batch norm, dropout, augmentation and a learning-rate schedule all on:
resuming is bit-exact at 1 and 2 threads, each epoch records its rate, and the settings are
checked before training starts."""

import numpy as np
import pytest

from cnn_core import ConfigError, ModelFileError, Network
from cnn_core.augmentation import Augmentation, warp
from cnn_core.noise import StepNoise
from tests.support.networks import stop_at, without_seconds

CONFIG = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": "same"},
        {"type": "batchnorm"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dropout", "rate": 0.25},
        {"type": "dense", "units": 6},
        {"type": "batchnorm", "momentum": 0.2},
        {"type": "dropout", "rate": 0.5},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}
SETTINGS = {
    "batch_size": 16,
    "seed": 3,
    "optimizer": {"name": "adamw", "learning_rate": 0.01},
    "augmentation": {"shift": 1, "rotate": 10, "flip": True},
}


def data():
    rng = np.random.default_rng(5)
    return rng.random((70, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 70)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "schedule",
    [{"name": "cosine", "warmup_epochs": 1}, {"name": "plateau", "patience": 0, "factor": 0.5}],
    ids=["cosine", "plateau"],
)
def test_two_epochs_resume_two_epochs_equals_four(tmp_path, threads, schedule):
    X, y = data()
    settings = SETTINGS | {"threads": threads, "lr_schedule": schedule}
    settings["validation_data"] = (X[:10], y[:10])
    straight = Network.from_config(CONFIG, seed=1)
    expected = straight.fit(X, y, epochs=4, **settings)

    ckpt = tmp_path / "ckpt.npz"
    first = Network.from_config(CONFIG, seed=1)
    first.fit(X, y, epochs=4, callback=stop_at(10), checkpoint_path=ckpt, **settings)  # epoch 2
    resumed = Network.from_config(CONFIG, seed=1)
    history = resumed.fit(X, y, epochs=4, resume_from=ckpt, **settings)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    assert without_seconds(history) == without_seconds(expected)
    rates = [e.learning_rate for e in expected.epochs]
    if schedule["name"] == "cosine":
        assert rates[0] == pytest.approx(0.005) and rates[1] == pytest.approx(0.01)
        assert rates[3] < rates[2] < rates[1]
    else:
        assert rates == sorted(rates, reverse=True) and rates[0] == 0.01


def test_the_rate_is_constant_without_a_schedule_and_checkpoints_refuse_other_settings(
    tmp_path,
):
    X, y = data()
    net = Network.from_config(CONFIG)
    ckpt = tmp_path / "c.npz"
    history = net.fit(X, y, epochs=2, threads=1, checkpoint_path=ckpt, **SETTINGS)
    assert [e.learning_rate for e in history.epochs] == [0.01, 0.01]
    other = SETTINGS | {"augmentation": {"shift": 2}}
    with pytest.raises(ModelFileError, match="augmentation"):
        Network.from_config(CONFIG).fit(X, y, epochs=3, threads=1, resume_from=ckpt, **other)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr_schedule": {"name": "linear"}}, r"lr_schedule must be \{'name': one of step"),
        ({"lr_schedule": {"name": "step", "gamma": 2}}, r"step: gamma must be in \(0, 1\)"),
        ({"lr_schedule": {"name": "step", "step_size": 1.5}}, r"step_size must be an integer"),
        ({"lr_schedule": {"name": "cosine", "warmup_epochs": 3}}, r"fewer than the epochs \(3\)"),
        ({"lr_schedule": {"name": "plateau", "cooldown": 1}}, r"unknown field\(s\) \['cooldown'"),
        ({"augmentation": {"shift": -1}}, r"augmentation.shift must be pixels in 0..64"),
        ({"augmentation": {"rotate": 400}}, r"augmentation.rotate must be degrees in 0..180"),
        ({"augmentation": {"flip": "yes"}}, r"augmentation.flip must be true or false"),
        ({"augmentation": {"zoom": 2}}, r"augmentation: unknown field\(s\) \['zoom'\]"),
        ({"optimizer": {"name": "sgd", "weight_decay": -1}}, r"weight_decay must be in \[0, 1\]"),
    ],
)
def test_bad_settings_are_refused_before_training(kwargs, message):
    X, y = data()
    calls = []
    with pytest.raises(ConfigError, match=message):
        Network.from_config(CONFIG).fit(X, y, epochs=3, callback=calls.append, **kwargs)
    assert calls == []


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


def test_prediction_is_not_augmented():
    X, y = data()
    net = Network.from_config(CONFIG)
    net.fit(X, y, epochs=1, threads=1, **SETTINGS)
    assert np.array_equal(net.predict_proba(X[:5]), net.predict_proba(X[:5]))
