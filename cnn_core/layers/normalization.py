"""Batch normalization: ``{"type": "batchnorm", "momentum": 0.1, "epsilon": 1e-5,
"activation": "linear"}``.

Per channel after a convolution (statistics over height, width and batch), per unit after a
dense layer (over the batch), with PyTorch's meaning of both fields: in training the layer
normalizes with the batch's mean and biased variance and moves
``running = (1 - momentum) * running + momentum * batch`` (the unbiased variance, M / (M - 1)
times the biased one, for the running variance); in evaluation it normalizes with the running
statistics. Parameters ``gamma`` (ones) and ``beta`` (zeros); buffers ``running_mean`` (zeros)
and ``running_var`` (ones). ``activation`` (default linear: none) follows the scale and shift,
for the order convolution, batch norm, relu: the convolution then takes ``"activation":
"linear"``, as PyTorch's ``Conv2d, BatchNorm2d, ReLU``.

With training shards each shard normalizes over its own samples (ghost batch norm), and the
shards' running-statistic updates are merged by the base class's rule: the mean weighted by
shard size, in shard order, so deterministic (for the running mean it equals the full-batch
update; the running variance is the mean of the shards' variances, the statistics the layer
actually normalized with). Why not SyncBatchNorm: measured by
``benchmarks/batchnorm_shards.py``, moving the sums is cheap (a pipe round trip is ~0.1-0.6 ms
against a ~2-4 s convnet shard step here) but it turns the one exchange per step of
:class:`~cnn_core.parallel.ShardPool` into a barrier at every batchnorm layer, forward and
backward, which would split each shard's pass into pieces the trainer schedules; and
``benchmarks/convnet_accuracy.py`` at 2 threads (ghost batches of 32) against 1 thread (full
batches of 64) found no accuracy to win back: 98.2% and 98.1% on 1,000 held-out digits (seed 0,
the full recipe, at an earlier commit), well inside the half point by which rounding alone
moves a single run (see the README).
"""

import math
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from .base import FieldSpec, Layer, Plan


@dataclass(frozen=True, kw_only=True)
class BatchNormPlan(Plan):
    momentum: float
    epsilon: float


class BatchNorm(Layer):
    """Normalize, then scale by ``gamma`` and shift by ``beta``, per channel or unit."""

    type = "batchnorm"
    fields = (
        FieldSpec(
            "momentum",
            "number",
            "Weight of the batch statistics in the running statistics (PyTorch's meaning).",
            default=0.1,
            minimum=0,
            maximum=1,
        ),
        FieldSpec(
            "epsilon",
            "number",
            "Added to the variance before its square root.",
            default=1e-5,
            minimum=0,
            maximum=1,
            exclusive_minimum=True,
        ),
        FieldSpec(
            "activation", "activation", "Applied after batch norm; default linear.", default=None
        ),
    )

    @classmethod
    def default_activation(cls, spec, is_last):
        return "linear"

    @classmethod
    def plan(cls, index, values, input_shape):
        channels = input_shape[0]
        return cls.make_plan(
            BatchNormPlan,
            index,
            input_shape,
            input_shape,
            param_count=2 * channels,
            macs=2 * math.prod(input_shape),
            activation=values["activation"],
            momentum=values["momentum"],
            epsilon=values["epsilon"],
        )

    @classmethod
    def normalized(cls, plan, spec):
        return {
            "type": cls.type,
            "momentum": plan.momentum,
            "epsilon": plan.epsilon,
            "activation": plan.activation,
        }

    def initial_params(self, rng, dtype):
        c = self.plan.input_shape[0]
        return {"gamma": np.ones(c, dtype=dtype), "beta": np.zeros(c, dtype=dtype)}

    def initial_buffers(self, dtype):
        c = self.plan.input_shape[0]
        return {"running_mean": np.zeros(c, dtype=dtype), "running_var": np.ones(c, dtype=dtype)}

    def forward(self, x, train):
        p, b, eps = self.params, self.buffers, self.plan.epsilon
        activation = self.plan.activation
        if not train:
            running = b["running_mean"], b["running_var"]
            out = F.batchnorm_forward(x, p["gamma"], p["beta"], eps, *running)[0]
            return F.activation_forward(activation, out)[0]
        out, norm_cache, mean, var = F.batchnorm_forward(x, p["gamma"], p["beta"], eps)
        out, act_cache = F.activation_forward(activation, out)
        self.cache = norm_cache, act_cache
        m = x.size // x.shape[0]
        momentum = x.dtype.type(self.plan.momentum)
        unbiased = var * x.dtype.type(m / (m - 1)) if m > 1 else var
        self.buffer_updates = {
            "running_mean": (1 - momentum) * b["running_mean"] + momentum * mean,
            "running_var": (1 - momentum) * b["running_var"] + momentum * unbiased,
        }
        return out

    def backward(self, dout):
        norm_cache, act_cache = self.cache
        dout = F.activation_backward(self.plan.activation, dout, act_cache)
        dx, self.grads["gamma"], self.grads["beta"] = F.batchnorm_backward(dout, norm_cache)
        self.cache = None
        return dx
