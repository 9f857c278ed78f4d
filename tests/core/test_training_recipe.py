"""Training with batch norm, dropout, augmentation and a learning-rate schedule all on:
resuming is bit-exact at 1 and 2 threads, each epoch records its rate, and the settings are
checked before training starts."""

import numpy as np
import pytest

from cnn_core import ConfigError, ModelFileError, Network
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
        ({"augmentation": {"shift": -1}}, r"augmentation: shift must be in \[0, 64\]"),
        ({"augmentation": {"rotate": 400}}, r"augmentation: rotate must be in \[0, 180\]"),
        ({"augmentation": {"flip": "yes"}}, r"augmentation: flip must be true or false"),
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


def test_prediction_is_not_augmented():
    X, y = data()
    net = Network.from_config(CONFIG)
    net.fit(X, y, epochs=1, threads=1, **SETTINGS)
    assert np.array_equal(net.predict_proba(X[:5]), net.predict_proba(X[:5]))
