"""What every layer type shares: its declared config fields, its plan, and its runtime shell.

A layer type is one :class:`Layer` subclass that declares

- ``type`` (the config name), ``aliases`` and ``fields``: the config keys it accepts, with their
  kinds, defaults, bounds and descriptions (the API schema is derived from these);
- ``plan()``: sizes resolved from validated field values and the input shape, as a frozen
  :class:`Plan` subclass whose names mean one thing (``filters``, ``pool_size``, ``units``);
- ``initial_params()`` and ``initial_buffers()``: the trained arrays and the state that is kept
  but not trained (e.g. running statistics), keyed by their short names (``"W"``);
- ``forward(x, train)`` / ``backward(dout)`` through :mod:`cnn_core.functional`.

At runtime every layer works in the internal batch-innermost layout ((C, H, W, N) maps, (D, N)
vectors). ``forward(x, train)`` keeps what backward needs only when ``train`` is true;
``backward(dout)`` fills ``grads`` and returns the gradient of the input (None when ``need_dx``
is false, which the network sets on its first layer). A layer that updates a buffer in training
does not write it: it leaves the new value in ``buffer_updates``, so that the network can merge
the updates of several shards in a fixed order (:meth:`Layer.merge_buffer_updates`). In
training, conv and pooling layers reuse scratch arrays from step to step
(:class:`~cnn_core.functional.Workspace`), so one layer object must not train in two threads at
once; the network gives each training thread its own layers.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import activations
from .. import functional as F
from ..errors import ConfigError
from ..specs import check_fields

REQUIRED = object()  # a field without a default


@dataclass(frozen=True)
class FieldSpec:
    """One config field of a layer type.

    ``kind`` says what values it takes: ``"count"`` (an int in minimum..maximum), ``"size"`` (an
    int or a pair of ints in minimum..maximum), ``"padding"`` (an int, a pair, ``"same"`` or
    ``"valid"``), ``"number"`` (a real number between minimum and maximum, a bound excluded
    when ``exclusive_minimum``/``exclusive_maximum``), ``"activation"`` (a name from
    :mod:`cnn_core.activations`) or ``"choice"`` (one of the names in ``choices``). A default of
    None means "derived" (the description says from what). ``maximum`` bounds what a request
    may ask for (the API schema enforces it); the library itself stops oversized networks by
    their cost (:data:`cnn_core.config.MAX_PARAMS` and the like), with a message that says so.
    """

    name: str
    kind: str
    description: str
    default: Any = REQUIRED
    minimum: float = 1
    maximum: float = 4096
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple = ()

    @property
    def required(self):
        return self.default is REQUIRED


def layer_error(index, kind, message):
    """The one error format: ``layer 2 (conv): kernel 5 does not fit input 4x4``."""
    return ConfigError(f"layer {index} ({kind}): {message}", layer=index)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A layer with every size resolved, before any array is allocated.

    ``floats_kept`` is what one sample keeps for backward (the layer's output, plus e.g. the
    im2col columns of a convolution): the memory caps and estimates add these up.
    """

    index: int
    type: str
    input_shape: tuple
    output_shape: tuple
    activation: str | None = None
    param_count: int = 0
    macs: int = 0  # multiply-adds per sample
    floats_kept: int = 0


class Parameters(dict):
    """Named arrays the layers compute with (a network's parameters or buffers). Assigning
    ``params[name] = array`` copies the values in (shape checked, cast to the network's dtype)
    rather than replacing an array the layers would never see."""

    def __setitem__(self, name, value):
        if name not in self:
            return super().__setitem__(name, value)
        current = self[name]
        value = np.asarray(value)
        if value.shape != current.shape:
            raise ValueError(
                f"{name} has shape {current.shape}, got an array of shape {value.shape}"
            )
        np.copyto(current, value, casting="same_kind")


class Layer:
    """Base of every layer type; see the module docstring for what a subclass declares."""

    type: ClassVar[str] = ""
    aliases: ClassVar[tuple] = ()
    fields: ClassVar[tuple] = ()
    needs_maps: ClassVar[bool] = False  # takes (C, H, W) inputs only

    def __init__(self, plan, is_output=False):
        self.plan = plan
        self.is_output = is_output
        self.params, self.grads, self.buffers = {}, {}, {}
        self.buffer_updates = {}
        self.need_dx = True
        self.cache = None
        self.noise = None  # the StepNoise of the training step under way (set by the network)
        self.workspace = F.Workspace()

    def __repr__(self):
        p = self.plan
        return f"{type(self).__name__}(index={p.index}, output_shape={p.output_shape})"

    # ------------------------------------------------------------------------------ planning

    @classmethod
    def configure(cls, index, spec, input_shape, is_last):
        """Validate a config entry of this type; returns ``(normalized spec, plan)``."""
        fields = {key: value for key, value in spec.items() if key != "type"}
        try:
            check_fields(fields, f"layer {index} ({cls.type})", sorted(f.name for f in cls.fields))
        except ConfigError as exc:
            exc.layer = index
            raise
        values = {}
        for f in cls.fields:  # activations first: they are checked before any size
            if f.kind == "activation":
                values[f.name] = cls._activation(index, spec, f, is_last)
        if cls.needs_maps and len(input_shape) != 3:
            raise layer_error(
                index, cls.type, f"needs a (channels, height, width) input, got {list(input_shape)}"
            )
        for f in cls.fields:
            if f.kind == "activation":
                continue
            if f.name not in spec and f.required:
                raise layer_error(index, cls.type, f"missing field {f.name!r}")
            value = spec.get(f.name, f.default)
            derived = value is None and f.default is None  # e.g. a pooling stride
            values[f.name] = None if derived else _parse(f, value, index, cls.type)
        plan = cls.plan(index, values, tuple(input_shape))
        return cls.normalized(plan, spec), plan

    @classmethod
    def default_activation(cls, spec, is_last):
        return "relu"

    @classmethod
    def _activation(cls, index, spec, f, is_last):
        name = spec.get(f.name)
        if name is None:
            name = cls.default_activation(spec, is_last)
        try:
            activations.get(name)
        except ConfigError as exc:
            raise layer_error(index, cls.type, str(exc)) from None
        if name == "softmax" and not is_last:
            raise layer_error(index, cls.type, "softmax is only allowed on the last layer")
        return name

    @classmethod
    def plan(cls, index, values, input_shape):
        """The :class:`Plan` for validated field ``values`` on ``input_shape``."""
        raise NotImplementedError

    @classmethod
    def make_plan(cls, plan_type, index, input_shape, output_shape, **sizes):
        """A ``plan_type`` of this layer type; ``floats_kept`` defaults to the output size."""
        sizes.setdefault("floats_kept", math.prod(output_shape))
        return plan_type(
            index=index, type=cls.type, input_shape=input_shape, output_shape=output_shape, **sizes
        )

    @classmethod
    def normalized(cls, plan, spec):
        """The config entry with every default filled in, as a network's config stores it."""
        return {"type": cls.type}

    # ------------------------------------------------------------------------------- arrays

    def initial_params(self, rng, dtype):
        """Trained arrays by short name; drawn in float64 and cast, so float32 and float64
        networks from one seed hold the same numbers."""
        return {}

    def initial_buffers(self, dtype):
        """Arrays kept with the model but not trained (never seen by the optimizer)."""
        return {}

    @staticmethod
    def merge_buffer_updates(updates, weights):
        """One buffer's new value from the updates of several shards, in shard order.

        The default is the mean weighted by the shards' sample counts, which equals the
        full-batch update for any buffer whose update is linear in a per-batch mean (a running
        mean). A layer whose update is not linear overrides this.
        """
        if len(updates) == 1:
            return updates[0]
        total = sum(weights)
        merged = updates[0] * (weights[0] / total)
        for update, weight in zip(updates[1:], weights[1:], strict=True):
            merged += update * (weight / total)
        return merged

    # ------------------------------------------------------------------------------ compute

    def forward(self, x, train):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError


def positive_int(value, index, kind, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise layer_error(index, kind, f"{field} must be a positive integer, got {value!r}")
    return value


def _parse(f, value, index, kind):
    """A field's value normalized: ints checked, sizes as pairs (PyTorch's ``_pair``)."""
    if f.kind == "count":
        return positive_int(value, index, kind, f.name)
    if f.kind == "size":
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise layer_error(index, kind, f"{f.name} must be an int or a pair, got {value!r}")
            return tuple(positive_int(v, index, kind, f.name) for v in value)
        v = positive_int(value, index, kind, f.name)
        return v, v
    if f.kind == "padding":
        return _padding(value, index, kind)
    if f.kind == "number":
        return _number(f, value, index, kind)
    if f.kind == "choice":
        if not isinstance(value, str) or value not in f.choices:
            raise layer_error(
                index, kind, f"{f.name} must be one of {', '.join(f.choices)}, got {value!r}"
            )
        return value
    raise ValueError(f"unknown field kind {f.kind!r}")


def _number(f, value, index, kind):
    low = "(" if f.exclusive_minimum else "["
    high = ")" if f.exclusive_maximum else "]"
    interval = f"{low}{f.minimum:g}, {f.maximum:g}{high}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise layer_error(index, kind, f"{f.name} must be a number in {interval}, got {value!r}")
    above = value > f.minimum if f.exclusive_minimum else value >= f.minimum
    below = value < f.maximum if f.exclusive_maximum else value <= f.maximum
    if not (above and below):
        raise layer_error(index, kind, f"{f.name} must be in {interval}, got {value!r}")
    return float(value)


def _padding(value, index, kind):
    if value in ("same", "valid"):
        return value
    pair = value if isinstance(value, (list, tuple)) and len(value) == 2 else (value, value)
    for p in pair:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise layer_error(
                index,
                kind,
                f"padding must be a non-negative int, a pair, 'same' or 'valid', got {value!r}",
            )
    return tuple(pair)


def size_text(pair):
    return f"{pair[0]}" if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def compact(pair):
    """A pair as the config writes it: one int when both sides agree."""
    return pair[0] if pair[0] == pair[1] else list(pair)


INITS = ("he", "glorot", "pytorch")
INIT_FIELD = FieldSpec(
    "init",
    "choice",
    "Initial weights: 'he' (normal, variance 2 / fan_in), 'glorot' (normal, variance 2 / "
    "(fan_in + fan_out)), both with zero biases, or 'pytorch' (PyTorch's default for Conv2d and "
    "Linear: weights and biases uniform in +-1 / sqrt(fan_in)). Default: he before relu or "
    "leaky_relu, glorot otherwise.",
    default=None,
    choices=INITS,
)


def default_init(init, activation):
    """The ``init`` field's value, derived from the activation when not given."""
    if init is not None:
        return init
    return "he" if activation in ("relu", "leaky_relu") else "glorot"


def initial_weights(rng, shape, fan_in, fan_out, init, dtype):
    """``{"W", "b"}`` of a conv or dense layer by the ``init`` rule (see INIT_FIELD), drawn in
    float64 from ``rng``.

    'pytorch' matters with batch norm after a layer: the norm makes the loss blind to the
    weights' scale, so Adam's steps of about the learning rate turn them faster the smaller
    they start (the convnet preset's accuracy, README)."""
    if init == "pytorch":
        bound = 1 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, shape)
        return {"W": w.astype(dtype), "b": rng.uniform(-bound, bound, shape[0]).astype(dtype)}
    std = np.sqrt(2.0 / fan_in) if init == "he" else np.sqrt(2.0 / (fan_in + fan_out))
    w = (rng.standard_normal(shape) * std).astype(dtype)
    return {"W": w, "b": np.zeros(shape[0], dtype=dtype)}
