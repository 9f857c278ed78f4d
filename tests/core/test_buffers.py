"""Buffers (state kept with a network but not trained) and train/eval mode, proven with a
test-only layer type that tracks a running mean of its input per channel and passes it through."""

import numpy as np
import pytest

from cnn_core import Network, layers, optimizers, parallel
from cnn_core.layers import Layer, Plan

MOMENTUM = 0.25


class RunningMean(Layer):
    """Identity; in training, ``running_mean`` moves towards the batch's mean per channel."""

    type = "running_mean_test"
    needs_maps = True

    @classmethod
    def plan(cls, index, values, input_shape):
        return cls.make_plan(Plan, index, input_shape, input_shape, floats_kept=0)

    def initial_buffers(self, dtype):
        return {"running_mean": np.zeros(self.plan.input_shape[0], dtype=dtype)}

    def forward(self, x, train):
        if train:
            batch_mean = x.mean(axis=(1, 2, 3))
            old = self.buffers["running_mean"]
            self.buffer_updates = {"running_mean": (1 - MOMENTUM) * old + MOMENTUM * batch_mean}
        return x

    def backward(self, dout):
        return dout


@pytest.fixture(autouse=True)
def running_mean_layer(monkeypatch):
    """RunningMean registered for one test: in copies of the registry, put back afterwards."""
    monkeypatch.setattr(layers, "LAYERS", dict(layers.LAYERS))
    monkeypatch.setattr(layers, "ALIASES", dict(layers.ALIASES))
    layers.register(RunningMean)


CONFIG = {
    "input_shape": [2, 6, 6],
    "layers": [
        {"type": "running_mean_test"},
        {"type": "conv", "filters": 3, "kernel_size": 3, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}
NAME = "0.running_mean"


def data(n=36, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2, 6, 6), dtype=np.float32)
    X[:, 1] += 3  # the channels' means differ, so a mixed-up channel shows
    return X, rng.integers(0, 3, n)


def fit(net, X, y, **kwargs):
    settings = {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "threads": 1} | kwargs
    return net.fit(X, y, **settings)


def test_a_buffer_is_named_like_a_parameter_but_kept_apart():
    net = Network.from_config(CONFIG)
    assert list(net.buffers) == [NAME] and NAME not in net.params
    assert net.buffers[NAME].dtype == np.float32 and not net.buffers[NAME].any()
    X, y = data(8)
    _, grads = net.loss_and_grads(X, y)
    assert set(grads) == set(net.params)
    expected = MOMENTUM * X.mean(axis=(0, 2, 3))  # from zeros, one step
    np.testing.assert_allclose(net.buffers[NAME], expected, rtol=1e-5)


def test_prediction_runs_in_eval_mode_and_forward_follows_the_mode():
    net = Network.from_config(CONFIG)
    X, _ = data(8)
    net.predict(X), net.predict_proba(X), net.forward(X)
    assert not net.training and not net.buffers[NAME].any()
    logits = net.train().forward(X)
    assert net.training and net.buffers[NAME].any()
    np.testing.assert_array_equal(logits, net.eval().logits(X))
    assert not net.training


def test_the_optimizer_never_sees_a_buffer():
    net = Network.from_config(CONFIG)
    opt = optimizers.get("adam")
    X, y = data()
    fit(net, X, y, optimizer=opt)
    assert {key.split("/", 1)[1] for key in opt.state} == set(net.params)
    assert net.buffers[NAME].any()


def test_buffers_are_saved_and_loaded(tmp_path):
    net = Network.from_config(CONFIG)
    fit(net, *data())
    net.save(tmp_path / "m.npz")
    loaded = Network.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.buffers[NAME], net.buffers[NAME])
    assert loaded.buffers[NAME].any()


@pytest.mark.parametrize("threads", [1, 2])
def test_checkpoint_resume_restores_buffers_bit_exactly(tmp_path, threads):
    X, y = data()
    straight = Network.from_config(CONFIG)
    fit(straight, X, y, epochs=3, threads=threads)
    path = tmp_path / "c.npz"
    interrupted = Network.from_config(CONFIG)
    stop_at = 7  # mid-epoch 2
    fit(
        interrupted,
        X,
        y,
        epochs=3,
        threads=threads,
        checkpoint_path=path,
        callback=lambda e: e["type"] == "iteration" and e["iteration"] == stop_at,
    )
    resumed = Network.from_config(CONFIG)
    fit(resumed, X, y, epochs=3, threads=threads, checkpoint_path=path, resume_from=path)
    np.testing.assert_array_equal(resumed.buffers[NAME], straight.buffers[NAME])
    for name, p in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], p)


def test_early_stopping_restores_the_best_epochs_buffers():
    X, y = data()
    net = Network.from_config(CONFIG)
    seen = {}

    def snapshot(event):
        if event["type"] == "epoch":
            seen[event["epoch"]] = (event["cost"], net.buffers[NAME].copy())

    # a learning rate this high makes the cost rise after the first epochs
    optimizer = {"name": "sgd", "learning_rate": 5.0}
    history = fit(
        net,
        X,
        y,
        epochs=8,
        optimizer=optimizer,
        early_stopping={"patience": 1},
        callback=snapshot,
    )
    assert history.stopped_early
    best = min(seen, key=lambda epoch: seen[epoch][0])
    assert best != max(seen)  # otherwise the test would prove nothing
    np.testing.assert_array_equal(net.buffers[NAME], seen[best][1])


def test_shards_merge_buffer_updates_in_a_fixed_order(monkeypatch):
    X, y = data()
    runs = {}
    for fork in (True, False):
        monkeypatch.setattr(parallel, "can_fork", lambda fork=fork: fork)
        net = Network.from_config(CONFIG)
        fit(net, X, y, threads=2)
        runs[fork] = net.buffers[NAME].copy()
    np.testing.assert_array_equal(runs[True], runs[False])
    one = Network.from_config(CONFIG)
    fit(one, X, y, threads=1)
    np.testing.assert_allclose(runs[True], one.buffers[NAME], rtol=1e-5)  # a linear update
