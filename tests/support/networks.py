"""Tiny networks, random inputs and comparisons that the core's test modules share."""

import dataclasses

import numpy as np

TINY = {
    "input_shape": [1, 6, 6],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 8, "activation": "tanh"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}
TINY_SIGMOID = {
    **TINY,
    "layers": [*TINY["layers"][:-1], {"type": "dense", "units": 1, "activation": "sigmoid"}],
}
ADAM = {"name": "adam", "learning_rate": 0.01}


def random_data(n, seed=0, classes=3, shape=(1, 6, 6)):
    """n standard-normal float32 images of `shape` and labels in 0..classes-1."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def same_params(a, b):
    """The same names, dtypes and values, bit for bit."""
    return sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def copy_params(net):
    return {k: v.copy() for k, v in net.params.items()}


def without_seconds(history):
    """The epochs of `history` without their wall times, which differ from run to run."""
    return [dataclasses.replace(e, seconds=None) for e in history.epochs]


def stop_at(iteration):
    """A fit callback that stops training after `iteration`."""
    return lambda event: event["type"] == "iteration" and event["iteration"] == iteration
