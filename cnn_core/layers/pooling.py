"""Max and average pooling: ``{"type": "maxpool" | "avgpool", "pool_size", "stride"}``."""

from dataclasses import dataclass

from .. import functional as F
from .base import FieldSpec, Layer, Plan, compact, layer_error, size_text


@dataclass(frozen=True, kw_only=True)
class PoolPlan(Plan):
    pool_size: tuple
    stride: tuple


class Pool(Layer):
    """Shared by both pooling types; a subclass names its kernels."""

    needs_maps = True
    fields = (
        FieldSpec("pool_size", "size", "Window height and width: an int or [ph, pw]."),
        FieldSpec("stride", "size", "Step between windows; defaults to pool_size.", default=None),
    )
    kernels = None  # (forward, backward) from functional

    @classmethod
    def plan(cls, index, values, input_shape):
        pool = values["pool_size"]
        stride = values["stride"] or pool
        c, h, w = input_shape
        if pool[0] > h or pool[1] > w:
            raise layer_error(
                index,
                cls.type,
                f"pool {size_text(pool)} does not fit input {h}x{w}: the output would shrink to "
                "zero",
            )
        out = (c, (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1)
        return cls.make_plan(PoolPlan, index, input_shape, out, pool_size=pool, stride=stride)

    @classmethod
    def normalized(cls, plan, spec):
        return {
            "type": cls.type,
            "pool_size": compact(plan.pool_size),
            "stride": compact(plan.stride),
        }

    def forward(self, x, train):
        out, cache = self.kernels[0](x, self.plan.pool_size, self.plan.stride)
        if train:
            self.cache = cache
        return out

    def backward(self, dout):
        dx = self.kernels[1](dout, self.cache, self.workspace)
        self.cache = None
        return dx


class MaxPool(Pool):
    """The maximum of each window (the first maximum wins ties)."""

    type = "maxpool"
    kernels = (F.maxpool_forward, F.maxpool_backward)


class AvgPool(Pool):
    """The mean of each window."""

    type = "avgpool"
    kernels = (F.avgpool_forward, F.avgpool_backward)


class GlobalAvgPool(Layer):
    """``{"type": "globalavgpool"}``: the mean of each map, (C, H, W) -> (C,)."""

    type = "globalavgpool"
    needs_maps = True

    @classmethod
    def plan(cls, index, values, input_shape):
        return cls.make_plan(Plan, index, input_shape, (input_shape[0],))

    def forward(self, x, train):
        out, shape = F.global_avgpool_forward(x)
        if train:
            self.cache = shape
        return out

    def backward(self, dout):
        dx = F.global_avgpool_backward(dout, self.cache)
        self.cache = None
        return dx
