"""The fully connected layer: ``{"type": "dense" | "fc", "units", "activation"}``, weights
(units, in_features) with inputs flattened in (C, H, W) order."""

import math
from dataclasses import dataclass

from .. import functional as F
from .base import INIT_FIELD, FieldSpec, Layer, Plan, default_init, initial_weights


@dataclass(frozen=True, kw_only=True)
class DensePlan(Plan):
    units: int
    init: str


class Dense(Layer):
    """``activation(W @ x + b)``; on the output layer the loss applies the activation."""

    type = "dense"
    aliases = ("fc",)
    fields = (
        FieldSpec("units", "count", "Number of outputs.", maximum=1_000_000),
        FieldSpec(
            "activation",
            "activation",
            "Default relu; on the last layer softmax, or sigmoid for one unit.",
            default=None,
        ),
        INIT_FIELD,
    )

    @classmethod
    def default_activation(cls, spec, is_last):
        if is_last:
            return "sigmoid" if spec.get("units") == 1 else "softmax"  # units checked later
        return "relu"

    @classmethod
    def plan(cls, index, values, input_shape):
        units = values["units"]
        features = math.prod(input_shape)
        return cls.make_plan(
            DensePlan,
            index,
            input_shape,
            (units,),
            activation=values["activation"],
            param_count=units * features + units,
            macs=units * features,
            units=units,
            init=default_init(values["init"], values["activation"]),
        )

    @classmethod
    def normalized(cls, plan, spec):
        return {
            "type": cls.type,
            "units": plan.units,
            "activation": plan.activation,
            "init": plan.init,
        }

    def initial_params(self, rng, dtype):
        p = self.plan
        fan_in = math.prod(p.input_shape)
        return initial_weights(rng, (p.units, fan_in), fan_in, p.units, p.init, dtype)

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
