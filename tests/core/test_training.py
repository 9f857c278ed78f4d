"""cnn_core.training: checkpoints and bit-exact resume (mid-epoch too), callbacks, early
stopping, divergence, argument checks before training, seeds, shards, threads and helpers."""

import dataclasses
import math
import signal
import threading

import numpy as np
import pytest

from cnn_core import ConfigError, DatasetError, DivergenceError, ModelFileError, Network
from cnn_core.files import load_archive, save_archive
from cnn_core.training import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tests.support.networks import (
    ADAM,
    TINY,
    TINY_SIGMOID,
    copy_params,
    random_data,
    same_params,
    stop_at,
    without_seconds,
)

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


def test_predicting_from_another_thread_during_fit_leaves_training_unchanged():
    X, y = data()
    settings = {"epochs": 1, "batch_size": 8, "threads": 1, "seed": 3}
    quiet = Network.from_config(CONFIG, seed=0)
    quiet_history = quiet.fit(X, y, **settings)
    net = Network.from_config(CONFIG, seed=0)
    predictions, errors = [], []

    def predict():
        try:
            predictions.append(net.predict(X[:3]))
        except Exception as exc:  # noqa: BLE001 - a thread's exception is otherwise lost
            errors.append(exc)

    def predict_during(event):
        if event["type"] == "iteration":
            worker = threading.Thread(target=predict)
            worker.start()
            worker.join()

    history = net.fit(X, y, callback=predict_during, **settings)
    assert errors == []
    assert len(predictions) == len(history.iterations) == 12
    assert all(p.shape == (3,) and p.dtype.kind == "i" for p in predictions)
    assert history.iterations == quiet_history.iterations
    assert all(np.array_equal(net.params[k], quiet.params[k]) for k in quiet.params)


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
    X, y = random_data(44)
    kwargs = {
        "batch_size": 8,
        "optimizer": {"name": optimizer, "learning_rate": 0.01},
        "seed": 5,
        "threads": threads,
        "early_stopping": early_stopping,
        "validation_data": random_data(12, seed=1) if validation else None,
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


def test_a_checkpoint_written_before_the_init_field_still_resumes(tmp_path):
    """Checkpoints store the normalized config; those from before ``init`` (conv, dense) was
    a field lack it, and resuming compares configs as this version normalizes them."""
    X, y = random_data(20)
    path = tmp_path / "checkpoint.npz"
    kwargs = {"batch_size": 8, "seed": 3, "threads": 1}
    Network.from_config(TINY, seed=0).fit(X, y, epochs=1, checkpoint_path=path, **kwargs)
    arrays, meta = load_archive(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    for layer in meta["config"]["layers"]:
        layer.pop("init", None)
    save_archive(path, arrays, meta)
    resumed = Network.from_config(TINY, seed=0)
    history = resumed.fit(X, y, epochs=2, resume_from=path, **kwargs)
    straight = Network.from_config(TINY, seed=0)
    straight.fit(X, y, epochs=2, **kwargs)
    assert len(history.epochs) == 2 and same_params(resumed.params, straight.params)


def test_resume_refuses_other_settings_or_architecture(tmp_path):
    X, y = random_data(20)
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
    X, y = random_data(20)
    Xv, yv = random_data(6, seed=1)
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
    X, y = random_data(40)
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
    X, y = random_data(20)
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
    X, y = random_data(40)
    snapshots = {}
    net = Network.from_config(TINY, seed=4)
    history = net.fit(
        X,
        y,
        epochs=epochs,
        batch_size=8,
        optimizer={"name": "adam", "learning_rate": 0.03},
        validation_data=random_data(20, seed=9) if validation else None,
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
    X, y = random_data(48)
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
        ({"early_stopping": {"patience": 0}}, r"^early_stopping: patience must be in \[1, 1000\]"),
        ({"early_stopping": {"patience": 1001}}, r"patience must be in \[1, 1000\], got 1001$"),
        (
            {"early_stopping": {"patience": 2, "min_delta": -1}},
            r"^early_stopping: min_delta must be in \[0, 1e\+06\], got -1$",
        ),
        ({"early_stopping": {"patience": 2, "min_delta": math.inf}}, r"must be a finite number"),
        (
            {"early_stopping": {"patience": 2, "restore_best": 1}},
            r"^early_stopping: restore_best must be true or false, got 1$",
        ),
        ({"early_stopping": {"patience": 2, "mode": "max"}}, r"unknown field\(s\) \['mode'\]"),
        ({"early_stopping": 3}, r"early_stopping must be an object"),
        (
            {"early_stopping": {"min_delta": 0.1}},
            r"early_stopping: missing field\(s\) \['patience'\]",
        ),
    ],
    ids=[
        "epochs-0",
        "epochs-float",
        "batch-0",
        "batch-bool",
        "threads-0",
        "optimizer",
        "patience-0",
        "patience-over-1000",
        "min-delta-negative",
        "min-delta-infinite",
        "restore-best-not-bool",
        "early-stopping-field",
        "early-stopping-int",
        "early-stopping-no-patience",
    ],
)
def test_fit_argument_errors(kwargs, pattern):
    X, y = random_data(8)
    net = Network.from_config(TINY)
    before = copy_params(net)
    with pytest.raises(ConfigError, match=pattern):
        net.fit(X, y, **{"epochs": 1, **kwargs})
    assert same_params(net.params, before)


def test_same_fit_seed_same_run_other_seed_other_shuffle():
    X, y = random_data(30)
    runs = []
    for seed in (0, 0, 1):
        net = Network.from_config(TINY, seed=0)
        history = net.fit(X, y, epochs=2, batch_size=8, optimizer=ADAM, seed=seed, threads=1)
        runs.append((net.params, history.iterations))
    assert same_params(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not same_params(runs[0][0], runs[2][0])


@pytest.mark.parametrize("config", [TINY, TINY_SIGMOID], ids=["softmax", "sigmoid"])
def test_two_threads_compute_the_same_gradient_as_one(config):
    X, y = random_data(30, classes=2 if config is TINY_SIGMOID else 3)
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
    X, y = random_data(5)
    net = Network.from_config(TINY, seed=0, dtype="float64")
    history = net.fit(X, y, epochs=1, batch_size=1, optimizer="sgd", threads=3)
    assert len(history.iterations) == 5
    assert all(np.isfinite(p).all() for p in net.params.values())
