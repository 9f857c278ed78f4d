"""A Network as an ONNX model, in evaluation mode, for onnxruntime and other engines.

The graph takes ``input``: float32 (N, C, H, W) in the model's preprocessed scale (what
``predict_proba`` takes) and gives ``probabilities``: (N, K) softmax probabilities, or (N, 1)
P(class 1) for one sigmoid unit. Weights are exported in float32 whatever the network's dtype.
Opset ``OPSET`` with IR version ``IR_VERSION``, which current onnxruntime accepts. The model's
``metadata_props`` record the config, the input layout and the preprocessing (the service's
models carry their classes and scaling in ``Network.metadata``), so a user of the file knows how
to turn an image into the input.

One exporter per layer type, keyed by its config name; a layer type without one is refused with
a clear error rather than exported wrongly.
"""

import json

import numpy as np

from .activations import LEAKY_RELU_SLOPE
from .errors import ConfigError
from .files import atomic_write

OPSET = 17
IR_VERSION = 10  # onnx >= 1.16; accepted by onnxruntime >= 1.18
INPUT, OUTPUT = "input", "probabilities"
ACTIVATION_OPS = {
    "relu": ("Relu", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_RELU_SLOPE}),
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "linear": (None, {}),
}


class _Graph:
    """Nodes and initializers in the making; ``last`` names the newest value."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.last = INPUT

    def constant(self, name, array):
        array = np.asarray(array, np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, *inputs, name, **attributes):
        """Append a node fed by ``self.last`` (then ``inputs``); it becomes ``self.last``."""
        self.nodes.append(
            self.helper.make_node(op_type, [self.last, *inputs], [name], name=name, **attributes)
        )
        self.last = name
        return name


def _activation(g, index, activation):
    op_type, attributes = ACTIVATION_OPS[activation]
    if op_type:
        g.op(op_type, name=f"{index}.{activation}", **attributes)


def _conv(g, index, layer):
    p = layer.plan
    top, bottom, left, right = p.padding
    g.op(
        "Conv",
        g.constant(f"{index}.W", layer.params["W"]),
        g.constant(f"{index}.b", layer.params["b"]),
        name=f"{index}.conv",
        kernel_shape=list(p.kernel_size),
        strides=list(p.stride),
        pads=[top, left, bottom, right],
    )
    _activation(g, index, p.activation)


def _pool(op_type):
    def export(g, index, layer):
        p = layer.plan
        g.op(
            op_type,
            name=f"{index}.{layer.type}",
            kernel_shape=list(p.pool_size),
            strides=list(p.stride),
        )

    return export


def _flatten(g, index, layer):
    g.op("Flatten", name=f"{index}.flatten", axis=1)


def _dense(g, index, layer):
    if len(layer.plan.input_shape) == 3:  # the implied flatten, in (C, H, W) order
        _flatten(g, index, layer)
    g.op(
        "Gemm",
        g.constant(f"{index}.W", layer.params["W"]),
        g.constant(f"{index}.b", layer.params["b"]),
        name=f"{index}.dense",
        transB=1,
    )
    if layer.is_output:
        if layer.plan.activation == "softmax":
            g.op("Softmax", name=OUTPUT, axis=1)
        else:
            g.op("Sigmoid", name=OUTPUT)
    else:
        _activation(g, index, layer.plan.activation)


def _batchnorm(g, index, layer):
    p, b = layer.params, layer.buffers
    g.op(
        "BatchNormalization",
        g.constant(f"{index}.gamma", p["gamma"]),
        g.constant(f"{index}.beta", p["beta"]),
        g.constant(f"{index}.running_mean", b["running_mean"]),
        g.constant(f"{index}.running_var", b["running_var"]),
        name=f"{index}.batchnorm",
        epsilon=float(layer.plan.epsilon),
    )
    _activation(g, index, layer.plan.activation)


def _dropout(g, index, layer):
    """Inverted dropout is the identity in evaluation mode: no node at all."""


def _global_avgpool(g, index, layer):
    g.op("GlobalAveragePool", name=f"{index}.globalavgpool")
    _flatten(g, index, layer)


EXPORTERS = {
    "conv": _conv,
    "maxpool": _pool("MaxPool"),
    "avgpool": _pool("AveragePool"),
    "flatten": _flatten,
    "dense": _dense,
    "batchnorm": _batchnorm,
    "dropout": _dropout,
    "globalavgpool": _global_avgpool,
}


def metadata(net):
    """The ``metadata_props`` of the export: strings, as ONNX stores them."""
    c, h, w = net.input_shape
    info = net.metadata or {}
    preprocessing = info.get("preprocessing", {})
    scale = preprocessing.get("image_scale")
    described = (
        f"8-bit pixel values (0..255) multiplied by {scale!r}, as float32"
        if scale is not None
        else "the same scaling as the arrays the network was trained on"
    )
    props = {
        "input_layout": f"NCHW float32, (N, {c}, {h}, {w})",
        "output": "probabilities: (N, K) softmax, or (N, 1) P(class 1) for one sigmoid unit",
        "preprocessing_description": (
            f"images converted to {'grayscale' if c == 1 else 'RGB'}, resized to {h}x{w}, then "
            + described
        ),
        "preprocessing": json.dumps(preprocessing, sort_keys=True),
        "config": json.dumps(net.config, sort_keys=True),
    }
    if "classes" in info:
        props["classes"] = json.dumps(info["classes"])
    return props


def build(net):
    """The ``onnx.ModelProto`` of ``net``, checked with ``onnx.checker``."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'onnx>=1.16'") from None
    g = _Graph(helper, numpy_helper)
    for index, layer in enumerate(net.layers):
        exporter = EXPORTERS.get(layer.type)
        if exporter is None:
            raise ConfigError(f"layer {index} ({layer.type}): no ONNX export for this layer type")
        exporter(g, index, layer)
    c, h, w = net.input_shape
    k = net.plans[-1].units
    graph = helper.make_graph(
        g.nodes,
        "cnn_core",
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", k])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="cnn_core",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, metadata(net))
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(net, path):
    """Write ``net`` as ONNX to a path (atomically) or a binary file object."""
    data = build(net).SerializeToString()
    if hasattr(path, "write"):
        path.write(data)
    else:
        atomic_write(path, lambda file: file.write(data))
