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

from . import layers
from .errors import ConfigError
from .layers import layer_error as _error

MAX_LAYERS = 64
MAX_PARAMS = 50_000_000
MAX_ACTIVATIONS_PER_SAMPLE = 16_000_000  # floats held per sample for backward, im2col included
MAX_INPUT_SIDE = 4096
MAX_INPUT_CHANNELS = 64


def check_input_shape(shape):
    """``(C, H, W)`` of a config's input_shape, refused unless three positive integers within
    the limits; prediction checks a model's shape here too."""
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
    shape = check_input_shape(config["input_shape"])
    entries = config.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("config needs a non-empty list of layers")
    if len(entries) > MAX_LAYERS:
        raise ConfigError(f"{len(entries)} layers is more than the limit of {MAX_LAYERS}")

    normalized, plans = [], []
    params = activations = 0
    last = len(entries) - 1
    for index, layer in enumerate(entries):
        spec, plan = _plan_layer(index, layer, shape, is_last=index == last)
        normalized.append(spec)
        plans.append(plan)
        shape = plan.output_shape
        params += plan.param_count
        activations += plan.floats_kept
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
    batch = 2 * batch_size * (math.prod(first) + sum(p.floats_kept for p in plans))
    return (data + params + batch) * itemsize


def _plan_layer(index, layer, shape, is_last):
    if not isinstance(layer, dict):
        raise ConfigError(
            f"layer {index}: must be an object with a 'type', got {layer!r}", layer=index
        )
    kind = layers.canonical(layer.get("type"))
    if kind is None:
        raise ConfigError(
            f"layer {index}: unknown type {layer.get('type')!r} "
            f"(expected one of {', '.join(layers.names())})",
            layer=index,
        )
    return layers.LAYERS[kind].configure(index, layer, shape, is_last)


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
    shape = check_input_shape(config["input_shape"])
    if kernels[0] != shape[0]:
        raise ConfigError(f"nb_kernel[0] is {kernels[0]} but input_shape has {shape[0]} channels")

    entries = []
    for k in range(1, len(arch)):
        kind = layers.canonical(arch[k])
        if kind == "conv":
            entries.append(
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
            entries.append({"type": kind, "pool_size": sizes[k], "stride": strides[k] or sizes[k]})
        elif kind == "dense":
            entries.append({"type": "dense", "units": kernels[k], "activation": acts[k]})
        else:
            raise ConfigError(f"layer {k - 1}: unknown seed architecture entry {arch[k]!r}")
    return {"input_shape": list(shape), "layers": entries}
