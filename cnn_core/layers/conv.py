"""The 2-D convolution layer: ``{"type": "conv", "filters", "kernel_size", "stride", "padding",
"activation"}``, weights (filters, in_channels, kh, kw) as in PyTorch."""

import math
from dataclasses import dataclass

from .. import functional as F
from .base import (
    INIT_FIELD,
    FieldSpec,
    Layer,
    Plan,
    compact,
    default_init,
    initial_weights,
    layer_error,
    size_text,
)


@dataclass(frozen=True, kw_only=True)
class ConvPlan(Plan):
    filters: int
    kernel_size: tuple
    stride: tuple
    padding: tuple  # top, bottom, left, right
    init: str


class Conv(Layer):
    """A 2-D convolution over (channels, height, width) maps, then an activation."""

    type = "conv"
    needs_maps = True
    fields = (
        FieldSpec("filters", "count", "Number of output channels (kernels).", maximum=4096),
        FieldSpec("kernel_size", "size", "Kernel height and width: an int or [kh, kw]."),
        FieldSpec("stride", "size", "Step between windows: an int or [sh, sw].", default=1),
        FieldSpec(
            "padding",
            "padding",
            "Zeros around the input: an int, [vertical, horizontal], 'valid' (0) or 'same' "
            "(output size ceil(input / stride), the extra pad at the bottom and right).",
            default=0,
            minimum=0,
        ),
        FieldSpec("activation", "activation", "Default relu.", default=None),
        INIT_FIELD,
    )

    @classmethod
    def plan(cls, index, values, input_shape):
        filters, kernel, stride = values["filters"], values["kernel_size"], values["stride"]
        c, h, w = input_shape
        pads = _explicit_padding(values["padding"], (h, w), kernel, stride)
        ph, pw = h + pads[0] + pads[1], w + pads[2] + pads[3]
        if kernel[0] > ph or kernel[1] > pw:
            raise layer_error(
                index,
                cls.type,
                f"kernel {size_text(kernel)} does not fit input {h}x{w}"
                + (f" (padded to {ph}x{pw})" if (ph, pw) != (h, w) else "")
                + "; use a smaller kernel, padding, or fewer pooling layers before it",
            )
        out = (filters, (ph - kernel[0]) // stride[0] + 1, (pw - kernel[1]) // stride[1] + 1)
        weights = filters * c * kernel[0] * kernel[1]
        columns = c * kernel[0] * kernel[1] * out[1] * out[2]  # im2col, kept for backward
        return cls.make_plan(
            ConvPlan,
            index,
            input_shape,
            out,
            activation=values["activation"],
            param_count=weights + filters,
            macs=weights * out[1] * out[2],
            floats_kept=math.prod(out) + columns,
            filters=filters,
            kernel_size=kernel,
            stride=stride,
            padding=pads,
            init=default_init(values["init"], values["activation"]),
        )

    @classmethod
    def normalized(cls, plan, spec):
        padding = spec.get("padding", 0)
        return {
            "type": cls.type,
            "filters": plan.filters,
            "kernel_size": compact(plan.kernel_size),
            "stride": compact(plan.stride),
            "padding": list(padding) if isinstance(padding, (list, tuple)) else padding,
            "activation": plan.activation,
            "init": plan.init,
        }

    def initial_params(self, rng, dtype):
        p = self.plan
        kh, kw = p.kernel_size
        shape = (p.filters, p.input_shape[0], kh, kw)
        return initial_weights(rng, shape, shape[1] * kh * kw, p.filters * kh * kw, p.init, dtype)

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


def _explicit_padding(padding, size, kernel, stride):
    """(top, bottom, left, right) pads from a validated padding field."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        pads = []
        for n, k, s in zip(size, kernel, stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = padding
    return ph, ph, pw, pw
