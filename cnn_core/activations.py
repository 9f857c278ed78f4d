"""Activation names, declared once: configs, the API schema and error messages use this list.

The math lives in :func:`cnn_core.functional.activation_forward` / ``activation_backward``.
"""

from .errors import ConfigError

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")  # the two that define a loss


def get(name, where=""):
    """``name`` if it is an activation, else a ConfigError prefixed with ``where``."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigError(
            f"{where}unknown activation {name!r} (expected one of {', '.join(ACTIVATIONS)})"
        )
    return name
