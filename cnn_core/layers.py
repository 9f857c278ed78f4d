"""Layers: thin shells over :mod:`cnn_core.functional` that hold parameters, gradients and a cache.

Every layer works in the internal batch-innermost layout ((C, H, W, N) maps, (D, N) vectors).
``forward(x, train)`` keeps what backward needs only when ``train`` is true; ``backward(dout)``
fills ``grads`` and returns the gradient of the input (None when ``need_dx`` is false, which the
network sets on its first layer). In training, conv and pooling layers reuse their scratch
arrays from step to step (:class:`~cnn_core.functional.Workspace`), so one layer object must
not train in two threads at once; the network gives each training thread its own layers.
"""

import numpy as np

from . import functional as F


class Parameters(dict):
    """A network's parameters by name. The layers compute with these very arrays, so
    assigning ``params[name] = array`` copies the values in (shape checked, cast to the
    network's dtype) rather than replacing an array the layers would never see."""

    def __setitem__(self, name, value):
        if name not in self:
            return super().__setitem__(name, value)
        current = self[name]
        value = np.asarray(value)
        if value.shape != current.shape:
            raise ValueError(
                f"parameter {name} has shape {current.shape}, got an array of shape {value.shape}"
            )
        np.copyto(current, value, casting="same_kind")


class Layer:
    params: dict
    grads: dict

    def __init__(self, plan):
        self.plan = plan
        self.params, self.grads = {}, {}
        self.need_dx = True
        self.cache = None
        self.workspace = F.Workspace()

    def __repr__(self):
        p = self.plan
        return f"{type(self).__name__}(index={p.index}, output_shape={p.output_shape})"


class Conv(Layer):
    def forward(self, x, train):
        ws = self.workspace if train else None
        z, conv_cache = F.conv_forward(
            x, self.params["W"], self.params["b"], self.plan.stride, self.plan.padding, ws
        )
        a, act_cache = F.activation_forward(self.plan.activation, z)
        if train:  # a prediction meanwhile (another thread) must not wipe a training cache
            self.cache = (conv_cache, act_cache)
        return a

    def backward(self, da):
        conv_cache, act_cache = self.cache
        dz = F.activation_backward(self.plan.activation, da, act_cache)
        dx, self.grads["W"], self.grads["b"] = F.conv_backward(dz, conv_cache, self.need_dx)
        self.cache = None
        return dx


class Pool(Layer):
    def __init__(self, plan):
        super().__init__(plan)
        if plan.type == "maxpool":
            self._forward, self._backward = F.maxpool_forward, F.maxpool_backward
        else:
            self._forward, self._backward = F.avgpool_forward, F.avgpool_backward

    def forward(self, x, train):
        out, cache = self._forward(x, self.plan.kernel, self.plan.stride)
        if train:
            self.cache = cache
        return out

    def backward(self, dout):
        dx = self._backward(dout, self.cache, self.workspace)
        self.cache = None
        return dx


class Flatten(Layer):
    """(C, H, W, N) -> (C*H*W, N): a free reshape in the batch-innermost layout."""

    def forward(self, x, train):
        if train:
            self.cache = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, dout):
        return dout.reshape(self.cache)


class Dense(Layer):
    def __init__(self, plan, is_output=False):
        super().__init__(plan)
        self.is_output = is_output  # the output activation is applied by the loss, not here

    def forward(self, x, train):
        if x.ndim == 4:  # implied flatten before the first dense layer
            x = x.reshape(-1, x.shape[-1])
        z, dense_cache = F.dense_forward(x, self.params["W"], self.params["b"])
        activation = "linear" if self.is_output else self.plan.activation
        a, act_cache = F.activation_forward(activation, z)
        if train:
            self.cache = (dense_cache, act_cache, activation)
        return a

    def backward(self, da):
        dense_cache, act_cache, activation = self.cache
        dz = F.activation_backward(activation, da, act_cache)
        dx, self.grads["W"], self.grads["b"] = F.dense_backward(dz, dense_cache, self.need_dx)
        self.cache = None
        if dx is not None and len(self.plan.input_shape) == 3:
            dx = dx.reshape(*self.plan.input_shape, -1)
        return dx


def build(plan, is_output):
    """The layer object for a plan."""
    if plan.type == "conv":
        return Conv(plan)
    if plan.type in ("maxpool", "avgpool"):
        return Pool(plan)
    if plan.type == "flatten":
        return Flatten(plan)
    return Dense(plan, is_output)


def initial_weights(plan, rng, dtype):
    """He-normal weights before a relu, Glorot-normal otherwise; zero biases.

    Returns {"W": ..., "b": ...} or {} for layers without parameters. Draws in float64 and
    casts, so float32 and float64 networks from one seed hold the same numbers.
    """
    if plan.type == "conv":
        kh, kw = plan.kernel
        shape = (plan.units, plan.input_shape[0], kh, kw)
        fan_in, fan_out = shape[1] * kh * kw, shape[0] * kh * kw
    elif plan.type == "dense":
        fan_in = int(np.prod(plan.input_shape))
        shape, fan_out = (plan.units, fan_in), plan.units
    else:
        return {}
    std = np.sqrt(2.0 / fan_in) if plan.activation == "relu" else np.sqrt(2.0 / (fan_in + fan_out))
    w = (rng.standard_normal(shape) * std).astype(dtype)
    return {"W": w, "b": np.zeros(shape[0], dtype=dtype)}
