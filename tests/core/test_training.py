"""cnn_core.training: stopping mid-epoch with a checkpoint, then resuming, gives the
uninterrupted run bit for bit; fit checks its inputs first and survives threads and helpers."""

import dataclasses
import signal
import threading

import numpy as np
import pytest

from cnn_core import DatasetError, ModelFileError, Network

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
