"""Stopping mid-epoch with a checkpoint, then resuming, gives the uninterrupted run bit for bit."""

import dataclasses

import numpy as np
import pytest

from cnn_core import Network

CONFIG = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}


def data():
    rng = np.random.default_rng(5)
    return rng.random((90, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 90)


def stop_at(iteration):
    return lambda event: event["type"] == "iteration" and event["iteration"] == iteration


def without_seconds(history):
    return [dataclasses.replace(e, seconds=None) for e in history.epochs]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "stop_iteration", [1, 4, 6, 7, 11]
)  # 6 batches per epoch: ends and middles
def test_stopping_mid_epoch_and_resuming_is_bit_identical(tmp_path, stop_iteration, threads):
    X, y = data()
    settings = {
        "epochs": 2,
        "batch_size": 16,
        "seed": 3,
        "validation_data": (X[:20], y[:20]),
        "early_stopping": {"patience": 5},
        "threads": threads,
    }
    straight = Network.from_config(CONFIG, seed=1)
    expected = straight.fit(X, y, **settings)

    ckpt = tmp_path / "ckpt.npz"
    first = Network.from_config(CONFIG, seed=1)
    partial = first.fit(X, y, callback=stop_at(stop_iteration), checkpoint_path=ckpt, **settings)
    assert len(partial.iterations) == stop_iteration

    resumed = Network.from_config(CONFIG, seed=1)
    history = resumed.fit(X, y, resume_from=ckpt, **settings)

    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
    assert history.iterations == expected.iterations
    assert without_seconds(history) == without_seconds(expected)
