"""Regressions found in review: each once let a user's reasonable call go wrong."""

import signal
import threading

import numpy as np
import pytest

from cnn_core import DatasetError, ModelFileError, Network

CONFIG = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": (1, 1), "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}


def data(n=40):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, n)


def test_a_tuple_padding_survives_save_load_and_resume(tmp_path):
    X, y = data()
    net = Network.from_config(CONFIG)
    net.fit(X, y, epochs=1, batch_size=8, threads=1, checkpoint_path=tmp_path / "c.npz")
    net.save(tmp_path / "m.npz")
    assert Network.load(tmp_path / "m.npz").config == net.config
    Network.from_config(CONFIG).fit(
        X, y, epochs=2, batch_size=8, threads=1, resume_from=tmp_path / "c.npz"
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_assigning_a_parameter_reaches_the_layers(threads):
    X, y = data()
    net = Network.from_config(CONFIG)
    zeros = np.zeros_like(net.params["2.W"], dtype=np.float64)
    net.params["2.W"] = zeros
    net.params["2.b"] = [0.0, 0.0, 0.0]
    np.testing.assert_allclose(net.predict_proba(X), 1 / 3)  # zero output layer: uniform
    net.fit(X, y, epochs=1, batch_size=8, threads=threads)
    assert net.params["2.W"].dtype == np.float32 and np.abs(net.params["2.W"]).sum() > 0
    with pytest.raises(ValueError, match="shape"):
        net.params["2.W"] = np.zeros((2, 2))


def test_predicting_from_another_thread_during_fit_does_not_break_training():
    X, y = data()
    net = Network.from_config(CONFIG)
    errors = []

    def predict_during(event):
        if event["type"] == "iteration":
            worker = threading.Thread(target=lambda: net.predict(X[:3]))
            worker.start()
            worker.join()

    try:
        net.fit(X, y, epochs=1, batch_size=8, threads=1, callback=predict_during)
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)
    assert errors == []


def test_fit_survives_helpers_reaped_by_someone_else():
    X, y = data()
    net = Network.from_config(CONFIG)
    held = dict(net.params)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children itself
    try:
        net.fit(X, y, epochs=1, batch_size=8, threads=2)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert all(net.params[name] is array for name, array in held.items())


def test_resuming_with_another_thread_count_is_refused(tmp_path):
    X, y = data()
    Network.from_config(CONFIG).fit(
        X, y, epochs=1, batch_size=8, threads=2, checkpoint_path=tmp_path / "c.npz"
    )
    with pytest.raises(ModelFileError, match="threads"):
        Network.from_config(CONFIG).fit(
            X, y, epochs=2, batch_size=8, threads=1, resume_from=tmp_path / "c.npz"
        )


def test_bad_validation_data_and_numpy_seeds_are_handled_before_training(tmp_path):
    X, y = data()
    calls = []
    net = Network.from_config(CONFIG)
    with pytest.raises(DatasetError, match="expects"):
        net.fit(
            X,
            y,
            epochs=1,
            batch_size=8,
            validation_data=(X[:, :, :4], y),
            callback=lambda event: calls.append(event),
        )
    assert calls == []
    net.fit(
        X.tolist(),
        y,
        epochs=1,
        batch_size=8,
        seed=np.int64(7),
        threads=1,
        checkpoint_path=tmp_path / "c.npz",
    )  # the seed goes into the checkpoint's JSON
    assert (tmp_path / "c.npz").exists()
