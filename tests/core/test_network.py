"""Network: save/load, seeds, checkpoints, fit (callbacks, early stopping, divergence),
predictions, dtypes, summary and the LeNet-5 preset."""

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from cnn_core import (
    ConfigError,
    DatasetError,
    DivergenceError,
    ModelFileError,
    Network,
    build_preset,
)
from cnn_core.files import save_archive

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


def data(n, seed=0, classes=3, shape=(1, 6, 6)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def same_params(a, b):
    return sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def copy_params(net):
    return {k: v.copy() for k, v in net.params.items()}


def without_seconds(history):
    return [dataclasses.replace(e, seconds=None) for e in history.epochs]


# ----------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("config", [TINY, TINY_SIGMOID], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype, config):
    net = Network.from_config(config, seed=1, dtype=dtype)
    X, y = data(20, classes=net.n_classes)
    net.fit(X, y, epochs=1, batch_size=8, optimizer=ADAM, threads=1)
    net.metadata = {"class_names": ["a", "b", "c"], "preprocessing": {"scale": 1 / 255}}
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = Network.load(path)
    assert loaded.config == net.config and loaded.dtype == np.dtype(dtype)
    assert loaded.metadata == net.metadata
    assert same_params(loaded.params, net.params)
    assert np.array_equal(loaded.predict_proba(X), net.predict_proba(X))
    assert loaded.predict_proba(X).dtype == np.dtype(dtype)
    assert np.array_equal(loaded.predict(X), net.predict(X))
    # saving again over the same path replaces the file atomically, leaving nothing behind
    loaded.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert same_params(Network.load(path).params, net.params)


def model_meta(config=TINY, **changes):
    return {
        "format": "cnn_core.model",
        "format_version": 1,
        "config": config,
        "dtype": "float32",
        "metadata": {},
        **changes,
    }


def write_bad_file(path, kind):
    net = Network.from_config(TINY, seed=0)
    params = copy_params(net)
    if kind == "pickled":
        path.write_bytes(pickle.dumps({"0.W": np.zeros(3)}))
    elif kind == "garbage":
        path.write_bytes(b"not a model at all\n" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        net.save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "bare-npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "npz-without-metadata":
        with open(path, "wb") as f:
            np.savez(f, **params)
    elif kind == "metadata-not-an-object":
        save_archive(path, params, [1, 2, 3])
    elif kind == "metadata-not-json":
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(b"{oops", dtype=np.uint8), **params)
    elif kind == "wrong-version":
        save_archive(path, params, model_meta(format_version=2))
    elif kind == "a-checkpoint":
        save_archive(path, params, model_meta(format="cnn_core.checkpoint"))
    elif kind == "object-array":
        with open(path, "wb") as f:
            np.savez(
                f,
                __meta__=np.frombuffer(json.dumps(model_meta()).encode(), dtype=np.uint8),
                **{**params, "0.W": np.array([{"x": 1}], dtype=object)},
            )
    elif kind == "wrong-shape":
        save_archive(path, {**params, "0.W": np.zeros((3, 1, 2, 2), np.float32)}, model_meta())
    elif kind == "missing-parameter":
        save_archive(path, {k: v for k, v in params.items() if k != "3.b"}, model_meta())
    elif kind == "non-float-parameter":
        save_archive(path, {**params, "3.b": np.array(["a", "b", "c"])}, model_meta())
    elif kind == "non-finite-parameter":
        save_archive(path, {**params, "3.b": np.array([0, np.nan, 0], np.float32)}, model_meta())
    elif kind == "invalid-config":
        save_archive(path, params, model_meta(config={"input_shape": [1, 6, 6], "layers": []}))
    elif kind == "bad-dtype":
        save_archive(path, params, model_meta(dtype="float16"))
    elif kind == "directory":
        path.mkdir()
    elif kind != "missing":
        raise AssertionError(kind)


BAD_FILES = {
    "pickled": r"not a readable cnn_core.model file",
    "garbage": r"not a readable cnn_core.model file",
    "empty": r"not a readable cnn_core.model file",
    "truncated": r"not a readable cnn_core.model file",
    "bare-npy": r"not a cnn_core.model file",
    "npz-without-metadata": r"not a cnn_core.model file \(no metadata\)",
    "metadata-not-an-object": r"not a cnn_core.model file",
    "metadata-not-json": r"not a readable cnn_core.model file",
    "wrong-version": r"has format version 2; this cnn_core reads version 1",
    "a-checkpoint": r"is a 'cnn_core.checkpoint' file, not cnn_core.model",
    "object-array": r"not a readable cnn_core.model file",
    "wrong-shape": r"parameter 0.W has shape \(3, 1, 2, 2\), expected \(3, 1, 3, 3\)",
    "missing-parameter": r"parameter names differ: missing \['3.b'\]",
    "non-float-parameter": r"parameter 3.b must hold finite floats",
    "non-finite-parameter": r"parameter 3.b must hold finite floats",
    "invalid-config": r"invalid config",
    "bad-dtype": r"invalid config",
    "directory": r"not a readable cnn_core.model file",
    "missing": r"no such file",
}


@pytest.mark.filterwarnings("error::ResourceWarning")  # no file handle left open either
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind, pattern", BAD_FILES.items(), ids=BAD_FILES.keys())
def test_load_refuses_bad_files(tmp_path, kind, pattern):
    path = tmp_path / "model.npz"
    write_bad_file(path, kind)
    with pytest.raises(ModelFileError, match=pattern):
        Network.load(path)


def test_load_never_unpickles(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    write_bad_file(tmp_path / "model.npz", "pickled")
    with pytest.raises(ModelFileError):
        Network.load(tmp_path / "model.npz")
    assert calls == []


# ------------------------------------------------------------------------ seeds and weights


def test_same_seed_gives_a_bit_identical_network():
    a, b = Network.from_config(TINY, seed=7), Network.from_config(TINY, seed=7)
    assert same_params(a.params, b.params)
    X, _ = data(5)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    c = Network.from_config(TINY, seed=8)
    assert not np.array_equal(a.params["0.W"], c.params["0.W"])


def test_float32_and_float64_networks_from_one_seed_hold_the_same_numbers():
    a = Network.from_config(TINY, seed=3, dtype="float32")
    b = Network.from_config(TINY, seed=3, dtype="float64")
    for k in a.params:
        assert a.params[k].dtype == np.float32 and b.params[k].dtype == np.float64
        assert np.array_equal(a.params[k], b.params[k].astype(np.float32))


@pytest.mark.parametrize(
    "activation, fan",
    [("relu", "he"), ("leaky_relu", "he"), ("tanh", "glorot"), ("linear", "glorot")],
)
def test_initialization_scale(activation, fan):
    config = {
        "input_shape": [4, 10, 10],
        "layers": [
            {"type": "conv", "filters": 50, "kernel_size": 3, "activation": activation},
            {"type": "dense", "units": 300, "activation": activation},
            {"type": "dense", "units": 2},
        ],
    }
    net = Network.from_config(config, seed=0, dtype="float64")
    fan_in_conv, fan_out_conv = 4 * 9, 50 * 9
    fan_in_dense, fan_out_dense = 50 * 8 * 8, 300
    for name, fan_in, fan_out in (
        ("0.W", fan_in_conv, fan_out_conv),
        ("1.W", fan_in_dense, fan_out_dense),
    ):
        std = math.sqrt(2 / fan_in) if fan == "he" else math.sqrt(2 / (fan_in + fan_out))
        w = net.params[name]
        assert abs(w.mean()) < 0.05 * std
        assert abs(w.std() / std - 1) < 0.05, name
    # the output (softmax) layer is never followed by relu: Glorot
    assert abs(net.params["2.W"].std() / math.sqrt(2 / 302) - 1) < 0.15
    assert all(not net.params[f"{i}.b"].any() for i in range(3))


# ------------------------------------------------------------------------------ checkpoints


CHECKPOINT_CASES = {
    "plain-1-thread": (None, False, 1),
    "plain-2-threads": (None, False, 2),
    "early-stopping-validation-1-thread": ({"patience": 2, "min_delta": 10.0}, True, 1),
    "early-stopping-validation-2-threads": ({"patience": 2, "min_delta": 10.0}, True, 2),
    "early-stopping-patient": ({"patience": 5}, True, 1),
}


@pytest.mark.parametrize(
    "early_stopping, validation, threads", CHECKPOINT_CASES.values(), ids=CHECKPOINT_CASES.keys()
)
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_checkpoint_resume_is_bit_identical(
    tmp_path, optimizer, early_stopping, validation, threads
):
    """4 epochs straight == 2 epochs with a checkpoint, then a fresh network resumed to 4.

    With ``min_delta`` 10, no epoch after the first counts as an improvement: the straight run
    stops at epoch 3 and restores epoch 1's weights, which the resumed run can only know from
    the checkpoint.
    """
    X, y = data(44)
    kwargs = {
        "batch_size": 8,
        "optimizer": {"name": optimizer, "learning_rate": 0.01},
        "seed": 5,
        "threads": threads,
        "early_stopping": early_stopping,
        "validation_data": data(12, seed=1) if validation else None,
    }

    straight = Network.from_config(TINY, seed=2)
    h_straight = straight.fit(X, y, epochs=4, **kwargs)

    first = Network.from_config(TINY, seed=2)
    path = tmp_path / "checkpoint.npz"
    first.fit(X, y, epochs=2, checkpoint_path=path, **kwargs)
    resumed = Network.from_config(TINY, seed=2)
    h_resumed = resumed.fit(X, y, epochs=4, resume_from=path, **kwargs)

    assert same_params(resumed.params, straight.params)
    assert h_resumed.iterations == h_straight.iterations
    assert without_seconds(h_resumed) == without_seconds(h_straight)
    assert h_resumed.stopped_early == h_straight.stopped_early
    if early_stopping and "min_delta" in early_stopping:
        assert h_straight.stopped_early and len(h_straight.epochs) == 3
    else:
        assert len(h_straight.epochs) == 4 and len(h_straight.iterations) == 4 * 6
    # the resumed network really trained: it is not the one that stopped at epoch 2
    assert not same_params(resumed.params, first.params) or h_straight.stopped_early


def test_resume_refuses_other_settings_or_architecture(tmp_path):
    X, y = data(20)
    path = tmp_path / "checkpoint.npz"
    Network.from_config(TINY, seed=0).fit(
        X, y, epochs=1, batch_size=8, checkpoint_path=path, threads=1
    )
    with pytest.raises(ModelFileError, match="other training settings"):
        Network.from_config(TINY, seed=0).fit(
            X, y, epochs=2, batch_size=4, resume_from=path, threads=1
        )
    with pytest.raises(ModelFileError, match="another architecture"):
        Network.from_config(TINY_SIGMOID, seed=0).fit(
            X, y % 2, epochs=2, batch_size=8, resume_from=path, threads=1
        )
    with pytest.raises(ModelFileError, match="not cnn_core.checkpoint"):
        net = Network.from_config(TINY)
        net.save(tmp_path / "model.npz")
        Network.from_config(TINY).fit(
            X, y, epochs=2, batch_size=8, resume_from=tmp_path / "model.npz", threads=1
        )


# ------------------------------------------------------------------------------------- fit


def test_callback_receives_iteration_and_epoch_events():
    X, y = data(20)
    Xv, yv = data(6, seed=1)
    events = []
    history = Network.from_config(TINY, seed=0).fit(
        X,
        y,
        epochs=2,
        batch_size=8,
        optimizer=ADAM,
        validation_data=(Xv, yv),
        callback=events.append,
        threads=1,
    )
    kinds = [e["type"] for e in events]
    assert kinds == ["iteration"] * 3 + ["epoch"] + ["iteration"] * 3 + ["epoch"]
    iteration = events[4]
    assert set(iteration) == {
        "type",
        "epoch",
        "iteration",
        "cost",
        "accuracy",
        "iterations_per_epoch",
    }
    assert (iteration["epoch"], iteration["iteration"], iteration["iterations_per_epoch"]) == (
        2,
        4,
        3,
    )
    assert 0 <= iteration["accuracy"] <= 1 and math.isfinite(iteration["cost"])
    epoch = events[-1]
    assert set(epoch) == {
        "type",
        "epoch",
        "cost",
        "train_accuracy",
        "val_cost",
        "val_accuracy",
        "seconds",
        "last_iteration",
        "learning_rate",
    }
    assert epoch["last_iteration"] == events[-2]["iteration"] == 6
    assert epoch["epoch"] == 2 and 0 <= epoch["val_accuracy"] <= 1 and epoch["val_cost"] > 0
    assert [e["cost"] for e in events if e["type"] == "iteration"] == [
        i.cost for i in history.iterations
    ]
    # the epoch cost is the sample-weighted mean of its batches (8, 8 and 4 samples)
    costs = [e["cost"] for e in events[4:7]]
    assert epoch["cost"] == pytest.approx((8 * costs[0] + 8 * costs[1] + 4 * costs[2]) / 20)
    assert dataclasses.asdict(history.epochs[-1]) == {k: v for k, v in epoch.items() if k != "type"}
    # and its validation figures are those of the final weights
    net = Network.from_config(TINY, seed=0)
    net.fit(X, y, epochs=2, batch_size=8, optimizer=ADAM, threads=1)
    scores = net.evaluate(Xv, yv)
    assert (scores.cost, scores.accuracy) == pytest.approx(
        (epoch["val_cost"], epoch["val_accuracy"])
    )


def test_callback_can_stop_training_at_an_iteration():
    X, y = data(40)
    net = Network.from_config(TINY, seed=0)
    before = copy_params(net)
    history = net.fit(
        X,
        y,
        epochs=3,
        batch_size=8,
        optimizer=ADAM,
        threads=1,
        callback=lambda e: e["type"] == "iteration" and e["iteration"] == 7,
    )
    assert len(history.iterations) == 7 and len(history.epochs) == 1
    # exactly 7 steps were taken: the same as a run of 7 steps stopped another way
    other = Network.from_config(TINY, seed=0)
    other.fit(
        X,
        y,
        epochs=2,
        batch_size=8,
        optimizer=ADAM,
        threads=1,
        callback=lambda e: e.get("iteration") == 7,
    )
    assert same_params(net.params, other.params)
    assert not same_params(net.params, before)


def test_callback_can_stop_training_at_an_epoch():
    X, y = data(20)
    history = Network.from_config(TINY).fit(
        X,
        y,
        epochs=5,
        batch_size=10,
        threads=1,
        callback=lambda e: e["type"] == "epoch" and e["epoch"] == 2,
    )
    assert len(history.epochs) == 2 and len(history.iterations) == 4
    assert not history.stopped_early


def early_stopping_run(epochs, early_stopping=None, validation=True):
    """Train on random labels (so the validation cost soon rises), recording the weights at
    every epoch end."""
    X, y = data(40)
    snapshots = {}
    net = Network.from_config(TINY, seed=4)
    history = net.fit(
        X,
        y,
        epochs=epochs,
        batch_size=8,
        optimizer={"name": "adam", "learning_rate": 0.03},
        validation_data=data(20, seed=9) if validation else None,
        threads=1,
        early_stopping=early_stopping,
        callback=lambda e: (
            e["type"] == "epoch" and snapshots.update({e["epoch"]: copy_params(net)})
        ),
    )
    return net, history, snapshots


def expected_stop(values, patience, min_delta=0.0):
    best, best_epoch, wait = math.inf, None, 0
    for epoch, value in enumerate(values, 1):
        if value < best - min_delta:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return None, best_epoch


@pytest.mark.parametrize("validation", [True, False], ids=["val-cost", "train-cost"])
def test_early_stopping_restores_the_best_weights(validation):
    _, reference, snapshots = early_stopping_run(12, validation=validation)
    key = "val_cost" if validation else "cost"
    stop, best = expected_stop([getattr(e, key) for e in reference.epochs], patience=2)
    if not validation:  # the training cost keeps falling: no stop; use a min_delta instead
        stop, best = expected_stop(
            [getattr(e, key) for e in reference.epochs], patience=2, min_delta=0.15
        )
    assert stop is not None and stop < 12 and best < stop
    spec = {"patience": 2} if validation else {"patience": 2, "min_delta": 0.15}
    net, history, _ = early_stopping_run(12, spec, validation=validation)
    assert history.stopped_early and len(history.epochs) == stop
    assert same_params(net.params, snapshots[best])
    assert not same_params(net.params, snapshots[stop])


def test_early_stopping_without_restore_keeps_the_last_weights():
    _, reference, snapshots = early_stopping_run(12)
    stop, _ = expected_stop([e.val_cost for e in reference.epochs], patience=2)
    net, history, _ = early_stopping_run(12, {"patience": 2, "restore_best": False})
    assert len(history.epochs) == stop
    assert same_params(net.params, snapshots[stop])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_error_suggests_a_lower_learning_rate(dtype):
    linear = {
        "input_shape": [1, 6, 6],
        "layers": [
            {"type": "conv", "filters": 3, "kernel_size": 3, "activation": "linear"},
            {"type": "dense", "units": 8, "activation": "linear"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    }
    X, y = data(48)
    net = Network.from_config(linear, seed=0, dtype=dtype)
    with pytest.raises(
        DivergenceError, match=r"cost became nan .*learning_rate=10\).*lower learning rate"
    ):
        net.fit(
            X,
            y,
            epochs=20,
            batch_size=16,
            optimizer={"name": "sgd", "learning_rate": 10},
            threads=1,
        )


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"epochs": 0}, r"epochs must be an integer in 1..10000, got 0"),
        ({"epochs": 2.0}, r"epochs must be an integer"),
        ({"batch_size": 0}, r"batch_size must be an integer in 1..65536, got 0"),
        ({"batch_size": True}, r"batch_size must be an integer"),
        ({"threads": 0}, r"threads must be an integer in 1..64, got 0"),
        ({"optimizer": "lbfgs"}, r"unknown optimizer 'lbfgs'"),
        ({"early_stopping": {"patience": 0}}, r"patience must be a positive integer"),
        (
            {"early_stopping": {"patience": 2, "min_delta": -1}},
            r"min_delta must be a finite number",
        ),
        ({"early_stopping": {"patience": 2, "mode": "max"}}, r"unknown field\(s\) \['mode'\]"),
        ({"early_stopping": 3}, r"early_stopping must be an object"),
    ],
    ids=[
        "epochs-0",
        "epochs-float",
        "batch-0",
        "batch-bool",
        "threads-0",
        "optimizer",
        "patience-0",
        "min-delta-negative",
        "early-stopping-field",
        "early-stopping-int",
    ],
)
def test_fit_argument_errors(kwargs, pattern):
    X, y = data(8)
    net = Network.from_config(TINY)
    before = copy_params(net)
    with pytest.raises(ConfigError, match=pattern):
        net.fit(X, y, **{"epochs": 1, **kwargs})
    assert same_params(net.params, before)


def test_same_fit_seed_same_run_other_seed_other_shuffle():
    X, y = data(30)
    runs = []
    for seed in (0, 0, 1):
        net = Network.from_config(TINY, seed=0)
        history = net.fit(X, y, epochs=2, batch_size=8, optimizer=ADAM, seed=seed, threads=1)
        runs.append((net.params, history.iterations))
    assert same_params(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not same_params(runs[0][0], runs[2][0])


@pytest.mark.parametrize("config", [TINY, TINY_SIGMOID], ids=["softmax", "sigmoid"])
def test_two_threads_compute_the_same_gradient_as_one(config):
    X, y = data(30, classes=2 if config is TINY_SIGMOID else 3)
    one, two = (
        Network.from_config(config, seed=0, dtype="float64"),
        Network.from_config(config, seed=0, dtype="float64"),
    )
    h1 = one.fit(
        X, y, epochs=2, batch_size=7, optimizer={"name": "sgd", "learning_rate": 0.1}, threads=1
    )
    h2 = two.fit(
        X, y, epochs=2, batch_size=7, optimizer={"name": "sgd", "learning_rate": 0.1}, threads=2
    )
    for k in one.params:
        np.testing.assert_allclose(two.params[k], one.params[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        [i.cost for i in h2.iterations], [i.cost for i in h1.iterations], rtol=1e-12
    )
    assert [e.train_accuracy for e in h2.epochs] == [e.train_accuracy for e in h1.epochs]


def test_a_batch_smaller_than_the_thread_count():
    X, y = data(5)
    net = Network.from_config(TINY, seed=0, dtype="float64")
    history = net.fit(X, y, epochs=1, batch_size=1, optimizer="sgd", threads=3)
    assert len(history.iterations) == 5
    assert all(np.isfinite(p).all() for p in net.params.values())


# ----------------------------------------------------------------------- predict and dtypes


def test_predict_shapes_softmax():
    net = Network.from_config(TINY, seed=0)
    X, _ = data(7)
    proba = net.predict_proba(X)
    assert proba.shape == (7, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    labels = net.predict(X)
    assert labels.shape == (7,) and np.issubdtype(labels.dtype, np.integer)
    assert np.array_equal(labels, proba.argmax(axis=1))
    assert net.predict_proba(X[:0]).shape == (0, 3) and net.predict(X[:0]).shape == (0,)


def test_predict_shapes_one_sigmoid_unit_and_threshold():
    net = Network.from_config(TINY_SIGMOID, seed=0, dtype="float64")
    X, _ = data(9)
    net.params["3.b"][...] = 0
    net.params["3.W"][...] = np.random.default_rng(1).standard_normal((1, 8))
    proba = net.predict_proba(X)
    assert proba.shape == (9, 1)
    labels = net.predict(X)
    assert labels.shape == (9,) and set(labels) <= {0, 1}
    assert np.array_equal(labels, (proba[:, 0] > 0.5).astype(int))
    assert 0 < labels.sum() < 9  # both sides of the threshold occur
    assert net.n_classes == 2 and net.output == "sigmoid"
    net.params["3.b"][...] = 50.0
    assert net.predict(X).tolist() == [1] * 9


def test_predict_in_chunks_matches_sample_by_sample():
    net = Network.from_config(TINY, seed=0, dtype="float64")
    X, _ = data(1100)  # more than one prediction chunk
    proba = net.predict_proba(X)
    picks = [0, 511, 512, 1023, 1024, 1099]
    np.testing.assert_allclose(
        proba[picks], np.concatenate([net.predict_proba(X[i : i + 1]) for i in picks]), rtol=1e-12
    )


def test_a_big_batch_on_two_blas_threads_is_predicted_in_two_threads_alike():
    net = Network.from_config(TINY, seed=0)
    X = np.random.default_rng(3).standard_normal((300, 1, 6, 6)).astype(np.float32)
    with threadpool_limits(1):
        alone = net.logits(X)
    with threadpool_limits(2):
        parallel = net.logits(X)
        limits = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    np.testing.assert_allclose(parallel, alone, rtol=1e-5, atol=1e-6)
    assert limits and set(limits) == {2}  # the one-thread limit of the predict threads is gone


def test_input_and_label_errors():
    net = Network.from_config(TINY)
    X, y = data(4)
    with pytest.raises(DatasetError, match=r"this network expects \(N, 1, 6, 6\)"):
        net.predict(X[:, 0])
    with pytest.raises(DatasetError, match=r"this network expects"):
        net.predict(np.zeros((2, 1, 6, 5)))
    with pytest.raises(DatasetError, match=r"labels must lie in 0..2, got 0..3"):
        net.loss_and_grads(X, np.array([0, 1, 2, 3]))
    with pytest.raises(DatasetError, match=r"labels must be 4 integers"):
        net.loss_and_grads(X, y.astype(float))
    with pytest.raises(DatasetError, match=r"labels must be 4 integers"):
        net.fit(X, y[:3], epochs=1)


def test_empty_data_is_a_dataset_error():
    net = Network.from_config(TINY)
    X, y = data(4)
    before = copy_params(net)
    with pytest.raises(DatasetError, match="no samples"):
        net.fit(X[:0], y[:0], epochs=1, threads=1)
    with pytest.raises(DatasetError, match="no samples"):  # refused before training an epoch
        net.fit(X, y, epochs=1, validation_data=(X[:0], y[:0]), threads=1)
    with pytest.raises(DatasetError, match="no samples"):
        net.evaluate(X[:0], y[:0])
    with pytest.raises(DatasetError, match="no samples"):
        net.loss_and_grads(X[:0], y[:0])
    assert same_params(net.params, before)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_end_to_end(dtype, optimizer):
    net = Network.from_config(TINY, seed=0, dtype=dtype)
    arrays = dict(net.params.items())
    X, y = data(16)
    X = X.astype(np.float64 if dtype == "float32" else np.float32)  # the other dtype on purpose
    history = net.fit(
        X, y, epochs=1, batch_size=8, optimizer=optimizer, validation_data=(X, y), threads=1
    )
    for k, p in net.params.items():
        assert p.dtype == np.dtype(dtype) and p is arrays[k]  # updated in place
    assert not all(
        np.array_equal(arrays[k], v)
        for k, v in copy_params(Network.from_config(TINY, seed=0, dtype=dtype)).items()
    )
    assert net.predict_proba(X).dtype == np.dtype(dtype)
    loss, grads = net.loss_and_grads(X, y)
    assert isinstance(loss, float) and all(g.dtype == np.dtype(dtype) for g in grads.values())
    assert all(isinstance(e.cost, float) for e in history.epochs)


# --------------------------------------------------------------------- summary and presets


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
    X, _ = data(3, shape=(1, 28, 28))
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
    X, y = data(4, shape=(3, 32, 32), classes=10)
    loss, grads = net.loss_and_grads(X, y)
    assert math.isfinite(loss) and grads["0.W"].shape == (6, 3, 5, 5)


def test_preset_errors():
    with pytest.raises(ConfigError, match="unknown preset 'alexnet'"):
        build_preset("alexnet", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_preset("lenet5", (1, 28, 28), 1)


# Regressions once found in review: a user's reasonable call that went wrong.

PADDED = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": (1, 1), "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}


def padded_data(n=40):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, n)


def test_a_tuple_padding_survives_save_load_and_resume(tmp_path):
    X, y = padded_data()
    net = Network.from_config(PADDED)
    net.fit(X, y, epochs=1, batch_size=8, threads=1, checkpoint_path=tmp_path / "c.npz")
    net.save(tmp_path / "m.npz")
    assert Network.load(tmp_path / "m.npz").config == net.config
    Network.from_config(PADDED).fit(
        X, y, epochs=2, batch_size=8, threads=1, resume_from=tmp_path / "c.npz"
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_assigning_a_parameter_reaches_the_layers(threads):
    X, y = padded_data()
    net = Network.from_config(PADDED)
    zeros = np.zeros_like(net.params["2.W"], dtype=np.float64)
    net.params["2.W"] = zeros
    net.params["2.b"] = [0.0, 0.0, 0.0]
    np.testing.assert_allclose(net.predict_proba(X), 1 / 3)  # zero output layer: uniform
    net.fit(X, y, epochs=1, batch_size=8, threads=threads)
    assert net.params["2.W"].dtype == np.float32 and np.abs(net.params["2.W"]).sum() > 0
    with pytest.raises(ValueError, match="shape"):
        net.params["2.W"] = np.zeros((2, 2))
