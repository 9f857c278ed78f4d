"""Architecture configs: normalize, validate and infer shapes, before any array is allocated.

A config is ``{"input_shape": [C, H, W], "layers": [layer, ...]}`` where a layer is one of

    {"type": "conv", "filters": F, "kernel_size": k, "stride": 1, "padding": 0,
     "activation": "relu"}
    {"type": "maxpool" | "avgpool", "pool_size": p, "stride": p}
    {"type": "flatten"}
    {"type": "dense" | "fc", "units": U, "activation": "relu"}

``kernel_size``, ``pool_size`` and ``stride`` take an int or a pair; ``padding`` takes an int, a
pair (vertical, horizontal), ``"valid"`` (0) or ``"same"`` (output size ceil(input / stride),
extra padding at the bottom and right as TensorFlow does). A ``flatten`` is implied before the
first dense layer after a 3-D output. Activations default to ``relu``, except on the last layer:
``softmax`` for several units, ``sigmoid`` for one.

The output layer must be a dense layer with softmax over K >= 2 units (softmax cross-entropy) or
a single sigmoid unit (binary cross-entropy, the seed's cost).

The seed notebook's parallel lists are accepted too (see :func:`from_seed_lists`).
"""

import math
from dataclasses import dataclass

from .errors import ConfigError

LAYER_TYPES = ("conv", "maxpool", "avgpool", "flatten", "dense")
TYPE_ALIASES = {"fc": "dense"}
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")
FIELDS = {
    "conv": {"filters", "kernel_size", "stride", "padding", "activation"},
    "maxpool": {"pool_size", "stride"},
    "avgpool": {"pool_size", "stride"},
    "flatten": set(),
    "dense": {"units", "activation"},
}

MAX_LAYERS = 64
MAX_PARAMS = 50_000_000
MAX_ACTIVATIONS_PER_SAMPLE = 16_000_000  # floats held per sample for backward, im2col included
MAX_INPUT_SIDE = 4096
MAX_INPUT_CHANNELS = 64


@dataclass(frozen=True)
class LayerPlan:
    """One layer with every size resolved: what layers.py needs to allocate and run it."""

    index: int
    type: str
    input_shape: tuple
    output_shape: tuple
    activation: str | None = None
    units: int = 0  # dense units or conv filters
    kernel: tuple = (1, 1)  # conv kernel or pooling window
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, bottom, left, right
    param_count: int = 0
    macs: int = 0  # multiply-adds per sample


def _error(index, kind, message):
    return ConfigError(f"layer {index} ({kind}): {message}")


def _positive_int(value, index, kind, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(index, kind, f"{field} must be a positive integer, got {value!r}")
    return value


def _pair(value, index, kind, field):
    """Normalize an int or a pair of ints to a pair, as PyTorch's ``_pair`` does."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise _error(index, kind, f"{field} must be an int or a pair, got {value!r}")
        return tuple(_positive_int(v, index, kind, field) for v in value)
    v = _positive_int(value, index, kind, field)
    return v, v


def _resolve_padding(padding, size, kernel, stride, index):
    """Explicit (top, bottom, left, right) pads for a conv layer."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        pads = []
        for n, k, s in zip(size, kernel, stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, (list, tuple)) and len(padding) == 2:
        ph, pw = padding
    else:
        ph = pw = padding
    for p in (ph, pw):
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise _error(
                index,
                "conv",
                f"padding must be a non-negative int, a pair, 'same' or 'valid', got {padding!r}",
            )
    return ph, ph, pw, pw


def _check_input_shape(shape):
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise ConfigError(f"input_shape must be [channels, height, width], got {shape!r}")
    for v in shape:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"input_shape entries must be positive integers, got {shape!r}")
    c, h, w = shape
    if c > MAX_INPUT_CHANNELS or h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
        raise ConfigError(
            f"input_shape {list(shape)} is too large: at most {MAX_INPUT_CHANNELS} channels and "
            f"{MAX_INPUT_SIDE} pixels a side"
        )
    return tuple(shape)


def normalize(config):
    """Return ``(config, plans)``: the config with every default filled in, and its layer plans.

    Raises ConfigError naming the layer and the cause for anything that cannot be built.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a dict, got {type(config).__name__}")
    if "architecture" in config:
        config = from_seed_lists(config)
    unknown = set(config) - {"input_shape", "layers"}
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {sorted(unknown)}: expected input_shape, layers"
        )
    if "input_shape" not in config:
        raise ConfigError("config needs input_shape: [channels, height, width]")
    shape = _check_input_shape(config["input_shape"])
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("config needs a non-empty list of layers")
    if len(layers) > MAX_LAYERS:
        raise ConfigError(f"{len(layers)} layers is more than the limit of {MAX_LAYERS}")

    normalized, plans = [], []
    params = activations = 0
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        spec, plan = _plan_layer(index, layer, shape, is_last=index == last)
        normalized.append(spec)
        plans.append(plan)
        shape = plan.output_shape
        params += plan.param_count
        activations += _floats_kept(plan)
        if params > MAX_PARAMS:
            raise _error(index, plan.type, f"the network would exceed {MAX_PARAMS:,} parameters")
        if activations > MAX_ACTIVATIONS_PER_SAMPLE:
            raise _error(
                index,
                plan.type,
                f"the network would keep more than {MAX_ACTIVATIONS_PER_SAMPLE:,} values per "
                "sample for training; use fewer filters or a smaller input",
            )
    _check_output(plans[-1])
    return {"input_shape": list(config["input_shape"]), "layers": normalized}, plans


def training_bytes(plans, batch_size, n_samples, itemsize=4):
    """A rough upper estimate of a training run's memory: the data set, the parameters with
    their gradients and optimizer moments, and what a mini-batch keeps for backward (twice,
    for the gradients flowing back and the scratch arrays). Lets a caller refuse a job that
    cannot fit before it starts, where the per-sample cap cannot see the batch size."""
    first = plans[0].input_shape
    data = n_samples * math.prod(first)
    params = 4 * sum(p.param_count for p in plans)
    batch = 2 * batch_size * (math.prod(first) + sum(_floats_kept(p) for p in plans))
    return (data + params + batch) * itemsize


def _floats_kept(plan):
    """Values per sample a layer keeps for backward (output, plus im2col columns for conv)."""
    kept = math.prod(plan.output_shape)
    if plan.type == "conv":
        kept += (
            plan.input_shape[0] * plan.kernel[0] * plan.kernel[1] * math.prod(plan.output_shape[1:])
        )
    return kept


def _plan_layer(index, layer, shape, is_last):
    if not isinstance(layer, dict):
        raise ConfigError(f"layer {index}: must be an object with a 'type', got {layer!r}")
    kind = layer.get("type")
    kind = TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind  # a list is unhashable
    if kind not in LAYER_TYPES:
        raise ConfigError(
            f"layer {index}: unknown type {layer.get('type')!r} "
            f"(expected one of conv, maxpool, avgpool, flatten, dense, fc)"
        )
    unknown = set(layer) - FIELDS[kind] - {"type"}
    if unknown:
        raise _error(
            index,
            kind,
            f"unknown field(s) {sorted(unknown)} "
            f"(allowed: {', '.join(sorted(FIELDS[kind])) or 'none'})",
        )
    activation = None
    if kind in ("conv", "dense"):
        default = "relu"
        if is_last and kind == "dense":
            default = "sigmoid" if layer.get("units") == 1 else "softmax"  # units checked below
        activation = layer.get("activation", default)
        if activation not in ACTIVATIONS:
            raise _error(
                index,
                kind,
                f"unknown activation {activation!r} (expected one of {', '.join(ACTIVATIONS)})",
            )
        if activation == "softmax" and not is_last:
            raise _error(index, kind, "softmax is only allowed on the last layer")

    if kind == "conv":
        return _plan_conv(index, layer, shape, activation)
    if kind in ("maxpool", "avgpool"):
        return _plan_pool(index, kind, layer, shape)
    if kind == "flatten":
        return {"type": "flatten"}, LayerPlan(index, kind, shape, (math.prod(shape),))
    return _plan_dense(index, layer, shape, activation)


def _plan_conv(index, layer, shape, activation):
    if len(shape) != 3:
        raise _error(index, "conv", f"needs a (channels, height, width) input, got {list(shape)}")
    for field in ("filters", "kernel_size"):
        if field not in layer:
            raise _error(index, "conv", f"missing field {field!r}")
    filters = _positive_int(layer["filters"], index, "conv", "filters")
    kernel = _pair(layer["kernel_size"], index, "conv", "kernel_size")
    stride = _pair(layer.get("stride", 1), index, "conv", "stride")
    padding = layer.get("padding", 0)
    c, h, w = shape
    pads = _resolve_padding(padding, (h, w), kernel, stride, index)
    ph, pw = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if kernel[0] > ph or kernel[1] > pw:
        raise _error(
            index,
            "conv",
            f"kernel {_size(kernel)} does not fit input {h}x{w}"
            + (f" (padded to {ph}x{pw})" if (ph, pw) != (h, w) else "")
            + "; use a smaller kernel, padding, or fewer pooling layers before it",
        )
    out = (filters, (ph - kernel[0]) // stride[0] + 1, (pw - kernel[1]) // stride[1] + 1)
    params = filters * c * kernel[0] * kernel[1] + filters
    spec = {
        "type": "conv",
        "filters": filters,
        "kernel_size": _compact(kernel),
        "stride": _compact(stride),
        "padding": list(padding) if isinstance(padding, (list, tuple)) else padding,
        "activation": activation,
    }
    plan = LayerPlan(
        index,
        "conv",
        shape,
        out,
        activation,
        filters,
        kernel,
        stride,
        pads,
        params,
        macs=(params - filters) * out[1] * out[2],
    )
    return spec, plan


def _plan_pool(index, kind, layer, shape):
    if len(shape) != 3:
        raise _error(index, kind, f"needs a (channels, height, width) input, got {list(shape)}")
    if "pool_size" not in layer:
        raise _error(index, kind, "missing field 'pool_size'")
    pool = _pair(layer["pool_size"], index, kind, "pool_size")
    stride = _pair(layer.get("stride", pool), index, kind, "stride")
    c, h, w = shape
    if pool[0] > h or pool[1] > w:
        raise _error(
            index,
            kind,
            f"pool {_size(pool)} does not fit input {h}x{w}: the output would shrink to zero",
        )
    out = (c, (h - pool[0]) // stride[0] + 1, (w - pool[1]) // stride[1] + 1)
    spec = {"type": kind, "pool_size": _compact(pool), "stride": _compact(stride)}
    return spec, LayerPlan(index, kind, shape, out, kernel=pool, stride=stride)


def _plan_dense(index, layer, shape, activation):
    if "units" not in layer:
        raise _error(index, "dense", "missing field 'units'")
    units = _positive_int(layer["units"], index, "dense", "units")
    features = math.prod(shape)
    params = units * features + units
    spec = {"type": "dense", "units": units, "activation": activation}
    plan = LayerPlan(
        index,
        "dense",
        shape,
        (units,),
        activation,
        units,
        param_count=params,
        macs=units * features,
    )
    return spec, plan


def _check_output(plan):
    if plan.type != "dense":
        raise _error(
            plan.index,
            plan.type,
            "the last layer must be dense: softmax over the classes, or one sigmoid unit",
        )
    if plan.activation == "softmax" and plan.units < 2:
        raise _error(
            plan.index,
            "dense",
            "softmax needs at least 2 units; use one sigmoid unit for two classes",
        )
    if plan.activation == "sigmoid" and plan.units != 1:
        raise _error(
            plan.index,
            "dense",
            f"a sigmoid output must have 1 unit (binary classification), got {plan.units}; "
            "use softmax for several classes",
        )
    if plan.activation not in ("softmax", "sigmoid"):
        raise _error(
            plan.index,
            "dense",
            f"the last layer's activation must be softmax or sigmoid, got {plan.activation!r}",
        )


def _size(pair):
    return f"{pair[0]}" if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _compact(pair):
    return pair[0] if pair[0] == pair[1] else list(pair)


def from_seed_lists(config):
    """Convert the seed notebook's parallel lists to a layers config.

    Entry 0 of each list describes the input (``architecture[0] == "init"``, ``nb_kernel[0]`` is
    its channel count). For entry l >= 1: conv uses ``nb_kernel[l]`` filters of
    ``filter_size[l]``, ``stride[l]``, ``padding[l]`` and ``activations[l]``; a pooling layer
    uses ``filter_size[l]`` as its window and ``stride[l]`` (its activation entry is ignored, as
    the seed says pooling has none); ``fc`` has ``nb_kernel[l]`` units and ``activations[l]``.
    """
    keys = ("architecture", "activations", "filter_size", "nb_kernel", "padding", "stride")
    unknown = set(config) - set(keys) - {"input_shape"}
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)} in a seed-style config")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ConfigError(f"a seed-style config needs the lists {', '.join(missing)}")
    lists = [config[k] for k in keys]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        raise ConfigError(
            f"the seed-style lists {', '.join(keys)} must all be lists of the same length"
        )
    arch, acts, sizes, kernels, pads, strides = lists
    if len(arch) < 2 or arch[0] != "init":
        raise ConfigError("a seed-style architecture starts with 'init' and has at least one layer")
    if "input_shape" not in config:
        raise ConfigError("a seed-style config needs input_shape: [channels, height, width]")
    shape = _check_input_shape(config["input_shape"])
    if kernels[0] != shape[0]:
        raise ConfigError(f"nb_kernel[0] is {kernels[0]} but input_shape has {shape[0]} channels")

    layers = []
    for k in range(1, len(arch)):
        kind = TYPE_ALIASES.get(arch[k], arch[k]) if isinstance(arch[k], str) else arch[k]
        if kind == "conv":
            layers.append(
                {
                    "type": "conv",
                    "filters": kernels[k],
                    "kernel_size": sizes[k],
                    "stride": strides[k] or 1,
                    "padding": pads[k],
                    "activation": acts[k],
                }
            )
        elif kind in ("maxpool", "avgpool"):
            if pads[k]:
                raise ConfigError(f"layer {k - 1} ({kind}): padding is not supported for pooling")
            layers.append({"type": kind, "pool_size": sizes[k], "stride": strides[k] or sizes[k]})
        elif kind == "dense":
            layers.append({"type": "dense", "units": kernels[k], "activation": acts[k]})
        else:
            raise ConfigError(f"layer {k - 1}: unknown seed architecture entry {arch[k]!r}")
    return {"input_shape": list(shape), "layers": layers}
