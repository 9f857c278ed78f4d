"""Presets: LeNet-5 adapted to a dataset's input shape and classes, and its summary."""

import math

import pytest

from cnn_core import ConfigError, Network, build_preset
from tests.support.networks import random_data

LENET_SUMMARY = [
    ("conv", [6, 28, 28], 6 * 25 + 6, 6 * 25 * 28 * 28),
    ("maxpool", [6, 14, 14], 0, 0),
    ("conv", [16, 10, 10], 16 * 6 * 25 + 16, 16 * 6 * 25 * 10 * 10),
    ("maxpool", [16, 5, 5], 0, 0),
    ("dense", [120], 400 * 120 + 120, 400 * 120),
    ("dense", [84], 120 * 84 + 84, 120 * 84),
    ("dense", [10], 84 * 10 + 10, 84 * 10),
]


def test_lenet5_preset_on_mnist_shape():
    net = Network.from_config(build_preset("lenet5", (1, 28, 28), 10))
    summary = net.summary()
    assert [
        (s["type"], s["output_shape"], s["param_count"], s["macs"]) for s in summary
    ] == LENET_SUMMARY
    assert [s["index"] for s in summary] == list(range(7))
    assert net.param_count == 61_706 == sum(p.size for p in net.params.values())
    assert net.macs == sum(row[3] for row in LENET_SUMMARY)
    assert net.params["0.W"].shape == (6, 1, 5, 5) and net.params["4.W"].shape == (120, 400)
    assert "61,706" in repr(net)


def test_lenet5_preset_two_classes_ends_in_one_sigmoid_unit():
    config = build_preset("lenet5", (1, 28, 28), 2)
    assert config["layers"][-1] == {"type": "dense", "units": 1, "activation": "sigmoid"}
    net = Network.from_config(config)
    assert net.output == "sigmoid" and net.param_count == 61_706 - (84 * 10 + 10) + (84 + 1)
    X, _ = random_data(3, shape=(1, 28, 28))
    assert net.predict_proba(X).shape == (3, 1)


def test_lenet5_preset_on_cifar_shape():
    net = Network.from_config(build_preset("lenet5", (3, 32, 32), 10))
    assert [s["output_shape"] for s in net.summary()] == [
        [6, 28, 28],
        [6, 14, 14],
        [16, 10, 10],
        [16, 5, 5],
        [120],
        [84],
        [10],
    ]
    assert net.param_count == 61_706 + 2 * 6 * 25
    X, y = random_data(4, shape=(3, 32, 32), classes=10)
    loss, grads = net.loss_and_grads(X, y)
    assert math.isfinite(loss) and grads["0.W"].shape == (6, 3, 5, 5)


def test_preset_errors():
    with pytest.raises(ConfigError, match="unknown preset 'alexnet'"):
        build_preset("alexnet", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_preset("lenet5", (1, 28, 28), 1)
