"""Central-difference gradient checks in float64.

Two levels:
- through the public ``Network.loss_and_grads`` for every layer type and mode, every hidden
  activation, both outputs (so both losses); and the gradient with respect to the input X;
- on the kernels of ``cnn_core.functional`` directly, with a random linear functional
  ``L = sum(R * out)`` of their output, so that every dx path is checked too (a network never
  computes dx for its first parameter layer).

Inputs are continuous random numbers, so relu kinks and max-pool ties are (with these fixed
seeds) never within eps of a sample point.
"""

import numpy as np
import pytest

from cnn_core import Network
from cnn_core import functional as F
from cnn_core.config import from_seed_lists

EPS = 1e-6
TOL = 1e-6


def rel_error(analytic, numeric):
    """max |a - n| relative to the largest entry of either (0 when both are 0)."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), 1e-12)
    return float(np.max(np.abs(analytic - numeric)) / scale)


def numeric_gradient(f, x, eps=EPS):
    """Central differences of the scalar f() with respect to every entry of x (in place)."""
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x)
    grad = np.zeros(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad.reshape(x.shape)


def build(config, seed=0):
    """A float64 network with random (non-zero) biases, so every parameter matters."""
    net = Network.from_config(config, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1000)
    for name, p in net.params.items():
        if name.endswith(".b"):
            p[...] = rng.normal(0.0, 0.2, p.shape)
    return net


def batch(net, n=3, seed=0):
    rng = np.random.default_rng(seed + 2000)
    X = rng.standard_normal((n, *net.input_shape))
    y = rng.integers(0, net.n_classes, n)
    y[: min(n, net.n_classes)] = np.arange(min(n, net.n_classes))  # every class once if possible
    return X, y


def check_network(config, n=3, seed=0):
    net = build(config, seed)
    X, y = batch(net, n, seed)
    loss, grads = net.loss_and_grads(X, y)
    assert np.isfinite(loss)
    assert set(grads) == set(net.params)
    for name, p in net.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float64, name
        numeric = numeric_gradient(lambda: net.loss_and_grads(X, y)[0], p)
        assert np.max(np.abs(numeric)) > 0, f"{name}: the loss does not depend on it"
        err = rel_error(grads[name], numeric)
        assert err < TOL, f"{name}: relative error {err:.2e}\nconfig: {config}"
    return net


def softmax_out(k=3):
    return {"type": "dense", "units": k, "activation": "softmax"}


SIGMOID_OUT = {"type": "dense", "units": 1, "activation": "sigmoid"}


# ------------------------------------------------------------------ activations x both losses


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "linear"])
def test_every_hidden_activation_with_both_losses(activation, output):
    config = {
        "input_shape": [2, 6, 6],
        "layers": [
            {
                "type": "conv",
                "filters": 3,
                "kernel_size": 3,
                "padding": 1,
                "activation": activation,
            },
            {"type": "maxpool", "pool_size": 2},
            {"type": "conv", "filters": 2, "kernel_size": 2, "activation": activation},
            {"type": "dense", "units": 4, "activation": activation},
            softmax_out(3) if output == "softmax" else SIGMOID_OUT,
        ],
    }
    check_network(config, n=4)


# ------------------------------------------------------------------------------ layer modes


def conv(filters, k, stride=1, padding=0, activation="tanh"):
    return {
        "type": "conv",
        "filters": filters,
        "kernel_size": k,
        "stride": stride,
        "padding": padding,
        "activation": activation,
    }


def two_convs(first, input_shape=(2, 7, 7), second=None):
    """``first`` is followed by another conv, so its dx is exercised too."""
    return {
        "input_shape": list(input_shape),
        "layers": [
            conv(2, 2, activation="relu"),
            first,
            second or conv(2, 2, activation="sigmoid"),
            softmax_out(3),
        ],
    }


CONV_MODES = {
    "stride2": conv(3, 3, stride=2),
    "stride3-k2": conv(2, 2, stride=3),
    "padding2": conv(3, 3, padding=2),
    "padding1-stride2": conv(2, 3, stride=2, padding=1),
    "same-odd-k3": conv(2, 3, padding="same"),
    "same-even-k2": conv(2, 2, padding="same"),
    "same-even-k4": conv(2, 4, padding="same"),
    "same-stride2-k3": conv(2, 3, stride=2, padding="same"),
    "same-stride2-k4": conv(2, 4, stride=2, padding="same"),
    "valid-k1": conv(3, 1, padding="valid"),
    "k5-padding2": conv(2, 5, padding=2),
    "padding-beyond-kernel": conv(2, 2, padding=[2, 1]),
    "non-square-kernel-stride": conv(2, [3, 2], stride=[2, 1], padding=[1, 0]),
    "non-square-kernel-pair-padding": conv(2, [1, 3], stride=[1, 2], padding=[0, 2]),
    "relu": conv(3, 3, padding=1, activation="relu"),
}


@pytest.mark.parametrize("layer", CONV_MODES.values(), ids=CONV_MODES.keys())
def test_conv_modes(layer):
    check_network(two_convs(layer))


def test_conv_several_channels():
    config = {
        "input_shape": [4, 5, 5],
        "layers": [
            conv(5, 3, padding=1, activation="relu"),
            conv(3, 2, stride=2),
            {"type": "dense", "units": 4},
            softmax_out(4),
        ],
    }
    check_network(config, n=4)


POOL_MODES = {
    "3-stride2-overlapping": (3, 2),
    "2-stride2": (2, 2),
    "2-stride1-overlapping": (2, 1),
    "3-stride1-overlapping": (3, 1),
    "2-stride3-gaps": (2, 3),
    "non-square-2x3-stride-1x2": ([2, 3], [1, 2]),
}


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("pool, stride", POOL_MODES.values(), ids=POOL_MODES.keys())
def test_pool_modes(kind, pool, stride):
    config = two_convs({"type": kind, "pool_size": pool, "stride": stride}, input_shape=(2, 9, 9))
    check_network(config)


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pool_default_stride_and_pool_as_first_layer(kind):
    config = {
        "input_shape": [2, 10, 10],
        "layers": [
            {"type": kind, "pool_size": 2},
            conv(3, 3, activation="relu"),
            {"type": kind, "pool_size": 3, "stride": 2},
            softmax_out(3),
        ],
    }
    check_network(config)


def test_dense_only_network():
    config = {
        "input_shape": [1, 3, 3],
        "layers": [
            {"type": "fc", "units": 6, "activation": "tanh"},
            {"type": "dense", "units": 5, "activation": "sigmoid"},
            {"type": "dense", "units": 4, "activation": "relu"},
            {"type": "dense", "units": 4, "activation": "linear"},
            SIGMOID_OUT,
        ],
    }
    check_network(config, n=5)


def flatten_config(explicit):
    layers = [conv(3, 3, activation="relu"), {"type": "avgpool", "pool_size": 2}]
    if explicit:
        layers.append({"type": "flatten"})
    layers += [{"type": "dense", "units": 4, "activation": "tanh"}, softmax_out(3)]
    return {"input_shape": [2, 6, 6], "layers": layers}


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit-flatten", "implied-flatten"])
def test_flatten(explicit):
    check_network(flatten_config(explicit))


def test_explicit_and_implied_flatten_give_the_same_gradients():
    a, b = build(flatten_config(True)), build(flatten_config(False))
    # the explicit flatten shifts the dense layers' indices by one; give b the weights of a
    rename = {"0.W": "0.W", "0.b": "0.b", "3.W": "2.W", "3.b": "2.b", "4.W": "3.W", "4.b": "3.b"}
    assert sorted(a.params) == sorted(rename)
    for src, dst in rename.items():
        b.params[dst][...] = a.params[src]
    X, y = batch(a)
    loss_a, grads_a = a.loss_and_grads(X, y)
    loss_b, grads_b = b.loss_and_grads(X, y)
    assert loss_a == loss_b
    for src, dst in rename.items():
        np.testing.assert_array_equal(grads_a[src], grads_b[dst])


def test_seed_style_config():
    config = {
        "input_shape": [2, 10, 10],
        "architecture": ["init", "conv", "maxpool", "conv", "avgpool", "fc", "fc"],
        "activations": ["init", "relu", "relu", "tanh", "tanh", "sigmoid", "sigmoid"],
        "filter_size": [0, 3, 2, 3, 2, 1, 1],
        "nb_kernel": [2, 3, 3, 4, 4, 5, 1],
        "padding": [0, 1, 0, 0, 0, 0, 0],
        "stride": [0, 1, 2, 1, 2, 0, 0],
    }
    assert [layer["type"] for layer in from_seed_lists(config)["layers"]] == [
        "conv",
        "maxpool",
        "conv",
        "avgpool",
        "dense",
        "dense",
    ]
    check_network(config, n=4)


def test_lenet_like_with_sigmoid_output():
    config = {
        "input_shape": [1, 12, 12],
        "layers": [
            conv(2, 5, padding="same", activation="relu"),
            {"type": "maxpool", "pool_size": 2},
            conv(3, 3, activation="relu"),
            {"type": "maxpool", "pool_size": 2},
            {"type": "dense", "units": 5, "activation": "relu"},
            SIGMOID_OUT,
        ],
    }
    check_network(config, n=6)


# ---------------------------------------------------------------- gradient w.r.t. the input X


def input_gradient(net, X, y):
    """dloss/dX via the network's own layers, with dx switched on for the first layer too
    (a test-only path: loss_and_grads skips that gradient, which nobody needs in training)."""
    saved = [layer.need_dx for layer in net.layers]
    try:
        for layer in net.layers:
            layer.need_dx = True
        z = net._forward(net._to_internal(X), train=True)
        _, d = net._loss(z, net._check_labels(y, len(X)))
        for layer in reversed(net.layers):
            d = layer.backward(d)
    finally:
        for layer, need in zip(net.layers, saved, strict=True):
            layer.need_dx = need
    return d.transpose(3, 0, 1, 2)


INPUT_GRAD_CONFIGS = {
    "conv-same-even-maxpool": {
        "input_shape": [2, 6, 6],
        "layers": [
            conv(3, 2, padding="same", activation="relu"),
            {"type": "maxpool", "pool_size": 3, "stride": 2},
            softmax_out(3),
        ],
    },
    "conv-stride2-pad1-avgpool-sigmoid": {
        "input_shape": [3, 7, 5],
        "layers": [
            conv(2, 3, stride=2, padding=1),
            {"type": "avgpool", "pool_size": 2, "stride": 1},
            SIGMOID_OUT,
        ],
    },
    "maxpool-first": {
        "input_shape": [2, 6, 6],
        "layers": [
            {"type": "maxpool", "pool_size": 2, "stride": 1},
            conv(2, [2, 3], stride=[1, 2]),
            softmax_out(2),
        ],
    },
    "dense-first": {
        "input_shape": [2, 3, 2],
        "layers": [{"type": "dense", "units": 4, "activation": "sigmoid"}, softmax_out(3)],
    },
    "flatten-first": {
        "input_shape": [2, 3, 2],
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 3, "activation": "relu"},
            SIGMOID_OUT,
        ],
    },
}


@pytest.mark.parametrize("config", INPUT_GRAD_CONFIGS.values(), ids=INPUT_GRAD_CONFIGS.keys())
def test_gradient_with_respect_to_input(config):
    net = build(config)
    X, y = batch(net, n=3)
    need_dx = [layer.need_dx for layer in net.layers]
    assert need_dx.count(False) == 1  # the first parameter layer skips dx in training
    dx = input_gradient(net, X, y)
    assert dx.shape == X.shape
    numeric = numeric_gradient(lambda: net.loss_and_grads(X, y)[0], X)
    assert rel_error(dx, numeric) < TOL
    assert [layer.need_dx for layer in net.layers] == need_dx  # restored by the test path


# ----------------------------------------------------- kernels: random linear functional of out


def functional_check(forward, backward, inputs, seed=0):
    """Check backward(R, cache) against central differences of sum(R * forward(*inputs)[0]).

    ``backward`` returns a tuple of gradients aligned with the leading entries of ``inputs``.
    """
    out, cache = forward(*inputs)
    r = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = backward(r.copy(), cache)  # a kernel may overwrite its upstream gradient
    for array, grad in zip(inputs, analytic, strict=True):
        numeric = numeric_gradient(lambda: float(np.sum(r * forward(*inputs)[0])), array)
        assert grad.shape == array.shape
        assert rel_error(grad, numeric) < TOL


KERNEL_CONV_CASES = {
    "k3-s1-p0": ((3, 3), (1, 1), (0, 0, 0, 0)),
    "k3-s2-p1": ((3, 3), (2, 2), (1, 1, 1, 1)),
    "k2-s1-same-even": ((2, 2), (1, 1), (0, 1, 0, 1)),
    "k4-s2-asymmetric": ((4, 4), (2, 2), (1, 2, 1, 2)),
    "k3x2-s2x1-p1x0": ((3, 2), (2, 1), (1, 1, 0, 0)),
    "k1-s3": ((1, 1), (3, 3), (0, 0, 0, 0)),
    "k5-s1-p2": ((5, 5), (1, 1), (2, 2, 2, 2)),
}


@pytest.mark.parametrize(
    "kernel, stride, padding", KERNEL_CONV_CASES.values(), ids=KERNEL_CONV_CASES.keys()
)
@pytest.mark.parametrize("blocks", ["one block", "a block per output row"])
def test_conv_kernel_gradients(monkeypatch, kernel, stride, padding, blocks):
    if blocks == "a block per output row":  # im2col's and the input gradient's blocks
        monkeypatch.setattr(F, "COLUMN_BLOCK_BYTES", 1)
        monkeypatch.setattr(F, "INPUT_GRADIENT_BLOCK_BYTES", 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 6, 2))
    w = rng.standard_normal((2, 3, *kernel))
    b = rng.standard_normal(2)
    functional_check(
        lambda x, w, b: F.conv_forward(x, w, b, stride, padding), F.conv_backward, (x, w, b)
    )


POOL_KERNEL_CASES = {
    "2-s2": ((2, 2), (2, 2)),
    "3-s2": ((3, 3), (2, 2)),
    "2-s1": ((2, 2), (1, 1)),
    "3x2-s1x2": ((3, 2), (1, 2)),
    "2-s3": ((2, 2), (3, 3)),
}


@pytest.mark.parametrize("pool, stride", POOL_KERNEL_CASES.values(), ids=POOL_KERNEL_CASES.keys())
@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pool_kernel_gradients(kind, pool, stride):
    forward = getattr(F, f"{kind}_forward")
    backward = getattr(F, f"{kind}_backward")
    x = np.random.default_rng(2).standard_normal((2, 7, 8, 3))
    functional_check(lambda x: forward(x, pool, stride), lambda r, c: (backward(r, c),), (x,))


def test_dense_kernel_gradients():
    rng = np.random.default_rng(3)
    a, w, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    functional_check(F.dense_forward, F.dense_backward, (a, w, b))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "linear"])
def test_activation_kernel_gradients(name):
    z = np.random.default_rng(4).standard_normal((4, 5)) * 2
    functional_check(
        lambda z: F.activation_forward(name, z.copy()),
        lambda r, cache: (F.activation_backward(name, r, cache),),
        (z,),
    )


@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["moderate", "large-logits"])
def test_loss_kernel_gradients(scale):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, 6)) * scale
    y = np.array([0, 1, 2, 3, 0, 2])
    _, dz = F.softmax_cross_entropy(z, y)
    assert rel_error(dz, numeric_gradient(lambda: F.softmax_cross_entropy(z, y)[0], z)) < 1e-5
    z1 = z[:1].copy()
    _, dz1 = F.binary_cross_entropy(z1, y % 2)
    assert rel_error(dz1, numeric_gradient(lambda: F.binary_cross_entropy(z1, y % 2)[0], z1)) < 1e-5
