"""Activation names, declared once: configs, the API schema and error messages use this list.

The math lives in :func:`cnn_core.functional.activation_forward` / ``activation_backward``.
``leaky_relu`` is ``max(z, LEAKY_RELU_SLOPE * z)`` with PyTorch's default slope, fixed so that a
name is all an activation is (configs, the API schema and ONNX's ``LeakyRelu`` agree on it).
"""

from .errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "linear")
LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative_slope
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")  # the two that define a loss


def get(name, where=""):
    """``name`` if it is an activation, else a ConfigError prefixed with ``where``."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigError(
            f"{where}unknown activation {name!r} (expected one of {', '.join(ACTIVATIONS)})"
        )
    return name
