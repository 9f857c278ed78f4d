"""Batch norm, dropout and global average pooling: float64 gradient checks in every placement,
random configurations mixing them with the other layers, and their training/evaluation
behaviour (running statistics, inverted dropout, masks keyed by seed and iteration)."""

import numpy as np
import pytest

from cnn_core import ConfigError, Network, build_preset
from cnn_core import functional as F
from cnn_core.noise import StepNoise

from .test_gradients import TOL, build, numeric_gradient

INVARIANT = 1e-3  # gradients this small on both sides: the loss is invariant to the parameter


def rel_error(analytic, numeric):
    """max |a - n| relative to the largest entry; a batch norm downstream can make the loss
    exactly invariant to a parameter (a shift before it), where both sides are ~0."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), INVARIANT)
    return float(np.max(np.abs(analytic - numeric)) / scale)


def gradient_check(config, n=5, seed=0):
    """Every parameter's gradient against central differences, all with one StepNoise so
    that each evaluation draws the same dropout masks; gammas away from 1 so they matter."""
    net = build(config, seed)
    rng = np.random.default_rng(seed + 7)
    for name, p in net.params.items():
        if name.endswith((".gamma", ".beta")):
            p[...] = (
                rng.uniform(0.5, 1.5, p.shape)
                if name.endswith("gamma")
                else rng.normal(0, 0.3, p.shape)
            )
    X = rng.standard_normal((n, *net.input_shape))
    y = rng.integers(0, net.n_classes, n)
    noise = StepNoise(seed, 1, 0, n)

    def loss():
        return net.shard_step(net.layers, X, y, n, noise)[0]

    _, _, grads, _ = net.shard_step(net.layers, X, y, n, noise)
    assert set(grads) == set(net.params)
    for name, p in net.params.items():
        numeric = numeric_gradient(loss, p)
        err = rel_error(grads[name], numeric)
        assert err < TOL, f"{name}: relative error {err:.2e}\nconfig: {config}"
    return net


def conv(filters=3, activation="tanh", **kwargs):
    return {"type": "conv", "filters": filters, "kernel_size": 3, "activation": activation} | kwargs


def dense(units, activation="tanh"):
    return {"type": "dense", "units": units, "activation": activation}


OUT = dense(3, "softmax")
PLACEMENTS = {
    "after-conv": [conv(), {"type": "batchnorm"}, OUT],
    "after-dense": [conv(), dense(4), {"type": "batchnorm", "momentum": 0.3}, OUT],
    "first-layer": [{"type": "batchnorm", "epsilon": 1e-3}, conv(), OUT],
    "conv-then-dense": [conv(2), {"type": "batchnorm"}, dense(5), {"type": "batchnorm"}, OUT],
    "activation-after": [
        conv(3, "linear"),
        {"type": "batchnorm", "activation": "relu"},
        dense(4, "linear"),
        {"type": "batchnorm", "activation": "tanh"},
        OUT,
    ],
    "dropout-maps": [conv(), {"type": "dropout", "rate": 0.4}, OUT],
    "dropout-vectors": [conv(), dense(6), {"type": "dropout", "rate": 0.5}, OUT],
    "globalavgpool": [conv(4), {"type": "globalavgpool"}, dense(4), OUT],
    "everything": [
        conv(3, padding=1),
        {"type": "batchnorm"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dropout", "rate": 0.25},
        conv(4, "relu", padding="same"),
        {"type": "batchnorm"},
        {"type": "globalavgpool"},
        dense(5, "sigmoid"),
        {"type": "batchnorm"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ],
}


@pytest.mark.parametrize("layers", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_gradients_in_every_placement(layers):
    gradient_check({"input_shape": [2, 6, 6], "layers": layers})


def random_config(seed):
    """Conv blocks with optional batchnorm, pooling and dropout, then dense layers with
    optional batchnorm and dropout, in random orders and sizes."""
    rng = np.random.default_rng(seed)
    size = side = 8
    layers = []
    for _ in range(int(rng.integers(1, 3))):
        activation = str(rng.choice(["relu", "tanh", "sigmoid", "linear"]))
        layers.append(conv(int(rng.integers(1, 4)), activation, padding="same"))
        norm = {"type": "batchnorm", "activation": str(rng.choice(["linear", "relu", "tanh"]))}
        extras = [norm, {"type": "dropout", "rate": float(rng.uniform(0.1, 0.6))}]
        if side >= 4 and rng.random() < 0.5:
            extras.append({"type": str(rng.choice(["maxpool", "avgpool"])), "pool_size": 2})
            side //= 2
        for i in rng.permutation(len(extras)):
            if rng.random() < 0.7:
                layers.append(extras[i])
    if rng.random() < 0.3:
        layers.append({"type": "globalavgpool"})
    for _ in range(int(rng.integers(0, 3))):
        layers.append(dense(int(rng.integers(2, 6)), str(rng.choice(["relu", "tanh"]))))
        if rng.random() < 0.5:
            layers.append({"type": "batchnorm", "momentum": float(rng.uniform(0.05, 0.5))})
        if rng.random() < 0.4:
            layers.append({"type": "dropout", "rate": float(rng.uniform(0.1, 0.6))})
    layers.append(OUT)
    return {"input_shape": [int(rng.integers(1, 3)), size, size], "layers": layers}


@pytest.mark.parametrize("seed", range(6))
def test_random_configs_mixing_new_and_old_layers(seed):
    config = random_config(seed)
    if not any(layer["type"] in ("batchnorm", "dropout") for layer in config["layers"]):
        config["layers"].insert(1, {"type": "batchnorm"})
    gradient_check(config, n=4, seed=seed)


def test_batchnorm_kernel_normalizes_per_channel_and_uses_given_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4, 5, 5, 6))
    out, _, mean, var = F.batchnorm_forward(x, np.ones(4), np.zeros(4), 1e-5)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(1, 2, 3)), var / (var + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2, 3)), rtol=1e-12)
    given, *_ = F.batchnorm_forward(x, np.full(4, 2.0), np.ones(4), 0.0, np.ones(4), np.full(4, 4))
    np.testing.assert_allclose(given, 2 * (x - 1) / 2 + 1, rtol=1e-12)


def test_batchnorm_running_statistics_and_eval_mode():
    config = {"input_shape": [2, 4, 4], "layers": [{"type": "batchnorm", "momentum": 0.2}, OUT]}
    net = Network.from_config(config, dtype="float64")
    assert not net.buffers["0.running_mean"].any() and (net.buffers["0.running_var"] == 1).all()
    rng = np.random.default_rng(1)
    X = rng.normal(5.0, 3.0, (10, 2, 4, 4))
    y = rng.integers(0, 3, 10)
    net.loss_and_grads(X, y)
    values = X.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(net.buffers["0.running_mean"], 0.2 * values.mean(axis=1))
    np.testing.assert_allclose(net.buffers["0.running_var"], 0.8 + 0.2 * values.var(axis=1, ddof=1))
    # evaluation normalizes with the running statistics: a different batch, the same mapping
    single = net.logits(X[:1])
    assert np.allclose(net.logits(X)[:1], single)
    assert np.allclose(net.eval().forward(X[:1]), single)


def test_dropout_is_inverted_off_in_evaluation_and_keyed_by_seed_and_iteration():
    config = {"input_shape": [1, 10, 10], "layers": [{"type": "dropout", "rate": 0.3}, OUT]}
    net = Network.from_config(config)
    layer = net.layers[0]
    x = np.ones((1, 10, 10, 400), dtype=np.float32)
    assert layer.forward(x, train=False) is x
    layer.noise = StepNoise(7, 3, 0, 400)
    out = layer.forward(x, train=True)
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.7)}
    assert abs((out == 0).mean() - 0.3) < 0.02 and abs(out.mean() - 1) < 0.03
    layer.noise = StepNoise(7, 3, 0, 400)
    assert np.array_equal(layer.forward(x, train=True), out)  # same seed and iteration
    layer.noise = StepNoise(7, 4, 0, 400)
    assert not np.array_equal(layer.forward(x, train=True), out)
    layer.noise = StepNoise(7, 3, 100, 250)  # a shard: its own rows of the batch's draw
    assert np.array_equal(layer.forward(x[..., 100:250], train=True), out[..., 100:250])


def test_training_mode_calls_outside_fit_draw_fresh_masks():
    config = {"input_shape": [1, 6, 6], "layers": [{"type": "dropout", "rate": 0.5}, OUT]}
    net = Network.from_config(config).train()
    X = np.ones((8, 1, 6, 6), dtype=np.float32)
    assert not np.array_equal(net.forward(X), net.forward(X))
    assert np.array_equal(net.eval().forward(X), net.forward(X))


def test_dropout_and_augmentation_do_not_depend_on_the_shard_count():
    """Without batch norm, 1 and 2 shards give one gradient up to summation order."""
    config = {
        "input_shape": [1, 8, 8],
        "layers": [conv(3, "relu"), {"type": "dropout", "rate": 0.5}, dense(5), OUT],
    }
    rng = np.random.default_rng(2)
    X, y = rng.random((12, 1, 8, 8)), rng.integers(0, 3, 12)
    results = []
    for threads in (1, 2):
        net = Network.from_config(config, seed=4, dtype="float64")
        net.fit(
            X,
            y,
            epochs=1,
            batch_size=12,
            optimizer="sgd",
            threads=threads,
            augmentation={"shift": 1, "rotate": 15},
        )
        results.append(net.params)
    for name, p in results[0].items():
        np.testing.assert_allclose(p, results[1][name], rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize(
    "layer, message",
    [
        (
            {"type": "batchnorm", "momentum": 1.5},
            r"layer 1 \(batchnorm\): momentum must be in \[0, 1\]",
        ),
        ({"type": "batchnorm", "epsilon": 0}, r"epsilon must be in \(0, 1\]"),
        ({"type": "dropout", "rate": 1}, r"layer 1 \(dropout\): rate must be in \[0, 1\)"),
        ({"type": "dropout", "rate": "half"}, r"rate must be a number in \[0, 1\), got 'half'"),
        ({"type": "dropout", "p": 0.5}, r"unknown field\(s\) \['p'\] \(allowed: rate\)"),
        ({"type": "globalavgpool", "size": 2}, r"unknown field\(s\) \['size'\]"),
    ],
)
def test_bad_fields_are_refused_naming_the_layer(layer, message):
    with pytest.raises(ConfigError, match=message):
        Network.from_config({"input_shape": [1, 6, 6], "layers": [conv(), layer, OUT]})


def test_globalavgpool_needs_maps():
    with pytest.raises(ConfigError, match=r"layer 2 \(globalavgpool\): needs a \(channels"):
        Network.from_config(
            {"input_shape": [1, 6, 6], "layers": [conv(), dense(4), {"type": "globalavgpool"}, OUT]}
        )


@pytest.mark.parametrize("shape, classes", [((1, 28, 28), 10), ((3, 32, 32), 2), ((1, 4, 4), 3)])
def test_convnet_preset_adapts_to_the_dataset(shape, classes):
    net = Network.from_config(build_preset("convnet", shape, classes))
    types = [spec["type"] for spec in net.config["layers"]]
    assert types.count("conv") == 4 and types.count("dropout") == 3
    norms = [spec for spec in net.config["layers"] if spec["type"] == "batchnorm"]
    assert len(norms) == 5 and {spec["activation"] for spec in norms} == {"relu"}
    assert net.input_shape == shape and net.n_classes == classes
    assert net.predict_proba(np.zeros((2, *shape))).shape == (2, 1 if classes == 2 else classes)
    names = set(net.params) | set(net.buffers)
    assert {"1.gamma", "1.beta", "1.running_mean", "1.running_var"} <= names
