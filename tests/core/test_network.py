"""Network: save/load, seeds and initialization, predictions, input and label checks, dtypes,
parameters reaching the layers."""

import json
import math
import pickle
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cnn_core import (
    DatasetError,
    ModelFileError,
    Network,
)
from cnn_core import network as network_module
from cnn_core.files import save_archive
from cnn_core.parallel import blas_controller
from tests.support.networks import (
    ADAM,
    TINY,
    TINY_SIGMOID,
    copy_params,
    random_data,
    same_params,
)

# ----------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("config", [TINY, TINY_SIGMOID], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype, config):
    net = Network.from_config(config, seed=1, dtype=dtype)
    X, y = random_data(20, classes=net.n_classes)
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
    X, _ = random_data(5)
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


# ----------------------------------------------------------------------- predict and dtypes


def test_predict_shapes_softmax():
    net = Network.from_config(TINY, seed=0)
    X, _ = random_data(7)
    proba = net.predict_proba(X)
    assert proba.shape == (7, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    labels = net.predict(X)
    assert labels.shape == (7,) and np.issubdtype(labels.dtype, np.integer)
    assert np.array_equal(labels, proba.argmax(axis=1))
    assert net.predict_proba(X[:0]).shape == (0, 3) and net.predict(X[:0]).shape == (0,)


def test_predict_shapes_one_sigmoid_unit_and_threshold():
    net = Network.from_config(TINY_SIGMOID, seed=0, dtype="float64")
    X, _ = random_data(9)
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
    X, _ = random_data(1100)  # more than one prediction chunk
    proba = net.predict_proba(X)
    picks = [0, 511, 512, 1023, 1024, 1099]
    np.testing.assert_allclose(
        proba[picks], np.concatenate([net.predict_proba(X[i : i + 1]) for i in picks]), rtol=1e-12
    )


def test_a_big_batch_on_two_blas_threads_is_predicted_in_two_threads_alike(monkeypatch):
    monkeypatch.setattr(network_module, "PARALLEL_PREDICT_MIN_MACS", 0)  # TINY is below it
    net = Network.from_config(TINY, seed=0)
    threads = []
    forward = net._forward
    monkeypatch.setattr(
        net,
        "_forward",
        lambda x, train: threads.append(threading.get_ident()) or forward(x, train),
    )
    X = np.random.default_rng(3).standard_normal((300, 1, 6, 6)).astype(np.float32)
    with threadpool_limits(1):
        alone = net.logits(X)
    with threadpool_limits(2):
        parallel = net.logits(X)
        limits = [lib["num_threads"] for lib in blas_controller().info()]
    np.testing.assert_allclose(parallel, alone, rtol=1e-5, atol=1e-6)
    assert limits and set(limits) == {2}  # the one-thread limit of the predict threads is gone
    assert threading.get_ident() not in threads[1:]  # after the one-thread call, pool threads


def test_a_big_batch_of_a_small_network_is_predicted_in_this_thread_on_one_blas_thread(
    monkeypatch,
):
    net = Network.from_config(TINY, seed=0)
    assert net.macs < network_module.PARALLEL_PREDICT_MIN_MACS
    X = np.random.default_rng(5).standard_normal((300, 1, 6, 6)).astype(np.float32)
    with threadpool_limits(1):
        alone = net.logits(X)
    seen = []
    forward = net._forward

    def spy(x, train):
        blas = [lib["num_threads"] for lib in blas_controller().info()]
        seen.append((threading.get_ident(), tuple(blas)))
        return forward(x, train)

    monkeypatch.setattr(net, "_forward", spy)
    with threadpool_limits(2):
        small = net.logits(X)
    np.testing.assert_allclose(small, alone, rtol=1e-5, atol=1e-6)
    assert seen and set(seen) == {(threading.get_ident(), (1,) * len(seen[0][1]))}


def test_a_big_batch_is_predicted_in_cache_sized_chunks_on_one_thread_even_parts_on_two(
    monkeypatch,
):
    monkeypatch.setattr(network_module, "PARALLEL_PREDICT_MIN_MACS", 0)
    net = Network.from_config(TINY, seed=0)
    X = np.random.default_rng(4).standard_normal((300, 1, 6, 6)).astype(np.float32)
    with threadpool_limits(1):
        whole = net.logits(X)  # TINY's outputs are small: 300 images make one chunk
    image_bytes = max(math.prod(p.output_shape) for p in net.plans) * 4
    monkeypatch.setattr(network_module, "PREDICT_CHUNK_BYTES", 7 * image_bytes + 1)
    monkeypatch.setattr(network_module, "PREDICT_BATCH", 40)
    sizes = []
    forward = net._forward
    monkeypatch.setattr(
        net, "_forward", lambda x, train: sizes.append(x.shape[-1]) or forward(x, train)
    )
    for threads, most in ((1, 7), (2, 40)):
        sizes.clear()
        with threadpool_limits(threads):
            chunked = net.logits(X)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
        assert sum(sizes) == 300 and max(sizes) <= most, (threads, sizes)
        assert len(sizes) == threads * math.ceil(300 / (threads * most))  # rounds of `threads`
        assert max(sizes) - min(sizes) <= 1  # even work


def test_input_and_label_errors():
    net = Network.from_config(TINY)
    X, y = random_data(4)
    with pytest.raises(DatasetError, match=r"this network expects \(N, 1, 6, 6\)"):
        net.predict(X[:, 0])
    with pytest.raises(DatasetError, match=r"this network expects"):
        net.predict(np.zeros((2, 1, 6, 5)))
    with pytest.raises(
        DatasetError, match=r"y holds the label 3 but there are only 3 classes: labels must be 0..2"
    ):
        net.loss_and_grads(X, np.array([0, 1, 2, 3]))
    with pytest.raises(DatasetError, match=r"y holds the negative label -1: labels must be 0..2"):
        net.evaluate(X, np.array([0, -1, 1, 1]))
    assert net.evaluate(X, np.zeros(4, np.int64)).support.tolist() == [4, 0, 0]  # one class scores
    with pytest.raises(DatasetError, match=r"y must be 4 integers, one label per sample"):
        net.loss_and_grads(X, y.astype(float))
    with pytest.raises(DatasetError, match=r"y must be 4 integers, one label per sample"):
        net.fit(X, y[:3], epochs=1)


def test_empty_data_is_a_dataset_error():
    net = Network.from_config(TINY)
    X, y = random_data(4)
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
    X, y = random_data(16)
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
