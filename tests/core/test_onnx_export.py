"""ONNX export checked by running it in onnxruntime against predict_proba."""

import io
import json

import numpy as np
import pytest

from cnn_core import Network, build_preset
from cnn_core.activations import ACTIVATIONS
from cnn_core.layers import LAYERS
from cnn_core.onnx_export import IR_VERSION, OPSET

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "linear")


def random_config(rng):
    """A random stack of every layer type on a small odd-sized input: convolutions with odd
    kernels, strides and paddings (int, pair, 'same', 'valid'), overlapping and tiling pools,
    batch norm and dropout after maps and after dense layers, an explicit or implied flatten
    or a global average pool, dense layers, and a softmax or single-sigmoid output."""
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(9, 16)), int(rng.integers(9, 16))
    layers = []
    for _ in range(int(rng.integers(1, 3))):
        padding = [0, 1, 2, [1, 0], [0, 2], "same", "valid"][int(rng.integers(7))]
        layers.append(
            {
                "type": "conv",
                "filters": int(rng.integers(1, 5)),
                "kernel_size": [int(rng.integers(1, 4)), int(rng.integers(1, 4))],
                "stride": [int(rng.integers(1, 3)), int(rng.integers(1, 3))],
                "padding": padding,
                "activation": HIDDEN_ACTIVATIONS[int(rng.integers(len(HIDDEN_ACTIVATIONS)))],
            }
        )
        layers += extras(rng)
        pool = int(rng.integers(1, 3))
        layers.append(
            {
                "type": ["maxpool", "avgpool"][int(rng.integers(2))],
                "pool_size": pool,
                "stride": int(rng.integers(1, pool + 1)),
            }
        )
    layers += [[], [{"type": "flatten"}], [{"type": "globalavgpool"}]][int(rng.integers(3))]
    layers.append(
        {
            "type": "dense",
            "units": int(rng.integers(2, 9)),
            "activation": HIDDEN_ACTIVATIONS[int(rng.integers(len(HIDDEN_ACTIVATIONS)))],
        }
    )
    layers += extras(rng)
    layers.append({"type": "dense", "units": 1 if rng.random() < 0.3 else int(rng.integers(2, 6))})
    return {"input_shape": [c, h, w], "layers": layers}


def extras(rng):
    """Nothing, a batch norm (with an activation after it or not), a dropout, or both, in a
    random order."""
    chosen = [
        {
            "type": "batchnorm",
            "epsilon": float(rng.choice([1e-5, 1e-3])),
            "activation": HIDDEN_ACTIVATIONS[int(rng.integers(len(HIDDEN_ACTIVATIONS)))],
        },
        {"type": "dropout", "rate": float(rng.uniform(0.1, 0.6))},
    ]
    return [layer for layer in rng.permutation(chosen) if rng.random() < 0.5]


def randomize_state(net, rng):
    """Nonzero biases and trained-looking batch-norm state, so a dropped or misplaced term
    would show in the outputs."""
    for name, array in net.state_dict().items():
        if name.endswith((".b", ".beta", ".running_mean")):
            array[:] = rng.standard_normal(array.shape)
        elif name.endswith((".gamma", ".running_var")):
            array[:] = rng.uniform(0.5, 2.0, array.shape)


def session(net):
    buffer = io.BytesIO()
    net.to_onnx(buffer)
    return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


def assert_matches(net, X):
    (probabilities,) = session(net).run(None, {"input": X})
    expected = net.predict_proba(X)
    assert probabilities.shape == expected.shape
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - expected).max() <= TOLERANCE


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_match_predict_proba(seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    net = Network.from_config(config, seed=seed)
    randomize_state(net, rng)
    X = rng.uniform(0, 1, (5, *config["input_shape"])).astype(np.float32)
    assert_matches(net, X)


def test_lenet5_on_digits_matches_and_keeps_the_batch_dimension_free():
    net = Network.from_config(
        {
            "input_shape": [1, 28, 28],
            "layers": [
                {"type": "conv", "filters": 6, "kernel_size": 5, "padding": 2},
                {"type": "maxpool", "pool_size": 2},
                {"type": "conv", "filters": 16, "kernel_size": 5},
                {"type": "avgpool", "pool_size": 2},
                {"type": "dense", "units": 120},
                {"type": "dense", "units": 84, "activation": "tanh"},
                {"type": "dense", "units": 10},
            ],
        },
        seed=0,
    )
    rng = np.random.default_rng(0)
    for n in (1, 9):
        assert_matches(net, rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32))


def test_every_layer_type_and_activation_is_covered_by_the_random_networks():
    layers = [
        layer
        for seed in range(16)
        for layer in random_config(np.random.default_rng(seed))["layers"]
    ]
    assert {layer["type"] for layer in layers} == set(LAYERS)
    assert set(HIDDEN_ACTIVATIONS) == set(ACTIVATIONS) - {"softmax"}
    assert {layer["activation"] for layer in layers if "activation" in layer} == set(
        HIDDEN_ACTIVATIONS
    )


def test_the_convnet_preset_after_training_steps_matches():
    rng = np.random.default_rng(3)
    net = Network.from_config(build_preset("convnet", (1, 28, 28), 10), seed=0)
    X = rng.uniform(0, 1, (16, 1, 28, 28)).astype(np.float32)
    for _ in range(3):  # running statistics away from their initial 0 and 1
        net.loss_and_grads(X, rng.integers(0, 10, 16))
    assert not np.allclose(net.buffers[next(iter(net.buffers))], 0)
    assert_matches(net, X[:4])


def test_a_float64_network_exports_float32_weights():
    config = random_config(np.random.default_rng(5))
    net = Network.from_config(config, seed=1, dtype="float64")
    model = onnx.load_from_string(_bytes(net))
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    X = np.random.default_rng(2).uniform(0, 1, (4, *config["input_shape"]))
    (probabilities,) = session(net).run(None, {"input": X.astype(np.float32)})
    assert np.abs(probabilities - net.predict_proba(X)).max() <= TOLERANCE


def test_versions_and_metadata_describe_the_input(tmp_path):
    net = Network.from_config(random_config(np.random.default_rng(7)), seed=0)
    net.metadata = {"classes": ["a", "b"], "preprocessing": {"image_scale": 1 / 255}}
    path = tmp_path / "model.onnx"
    net.to_onnx(path)
    model = onnx.load(path)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)] and OPSET >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == ["a", "b"]
    assert json.loads(props["preprocessing"]) == {"image_scale": 1 / 255}
    assert str(1 / 255) in props["preprocessing_description"]
    assert json.loads(props["config"]) == net.config
    assert props["input_layout"].startswith("NCHW float32")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", *net.input_shape]


def _bytes(net):
    buffer = io.BytesIO()
    net.to_onnx(buffer)
    return buffer.getvalue()
