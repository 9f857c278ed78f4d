"""``{"type": "flatten"}``: (C, H, W) maps to a (C*H*W) vector, in (C, H, W) order."""

import math

from .base import Layer, Plan


class Flatten(Layer):
    """A free reshape in the batch-innermost layout; implied before a dense layer on maps."""

    type = "flatten"

    @classmethod
    def plan(cls, index, values, input_shape):
        size = math.prod(input_shape)
        return cls.make_plan(Plan, index, input_shape, (size,))

    def forward(self, x, train):
        if train:
            self.cache = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, dout):
        return dout.reshape(self.cache)
