"""Layer types, each one class registered once by its config name (Keras' ``get()`` idea).

Adding a layer type: write a :class:`~cnn_core.layers.base.Layer` subclass (its fields, plan,
arrays and forward/backward) and :func:`register` it here. Config validation, the network, its
files and the API schema all read the registry.
"""

from ..errors import ConfigError
from .base import REQUIRED, FieldSpec, Layer, Parameters, Plan, layer_error
from .conv import Conv, ConvPlan
from .dense import Dense, DensePlan
from .dropout import Dropout, DropoutPlan
from .flatten import Flatten
from .normalization import BatchNorm, BatchNormPlan
from .pooling import AvgPool, GlobalAvgPool, MaxPool, PoolPlan

LAYERS = {}  # config name -> Layer subclass
ALIASES = {}  # alias -> config name


def register(cls):
    """Make a layer type known by its ``type`` and ``aliases``; returns the class."""
    for name in (cls.type, *cls.aliases):
        if name in LAYERS or name in ALIASES:
            raise ValueError(f"layer type {name!r} is registered already")
    LAYERS[cls.type] = cls
    ALIASES.update(dict.fromkeys(cls.aliases, cls.type))
    return cls


def canonical(name):
    """The config name for ``name`` or an alias of it; None for an unknown name."""
    if not isinstance(name, str):  # a list or dict is unhashable
        return None
    name = ALIASES.get(name, name)
    return name if name in LAYERS else None


def get(name):
    """The layer class for a type name or alias; raises ConfigError for an unknown name."""
    kind = canonical(name)
    if kind is None:
        raise ConfigError(f"unknown layer type {name!r} (expected one of {', '.join(names())})")
    return LAYERS[kind]


def names():
    """Every accepted type name, aliases included, in registration order."""
    return [n for cls in LAYERS.values() for n in (cls.type, *cls.aliases)]


def build(plan, is_output):
    """The layer object that runs ``plan``."""
    return LAYERS[plan.type](plan, is_output)


for _cls in (Conv, MaxPool, AvgPool, Flatten, Dense, BatchNorm, Dropout, GlobalAvgPool):
    register(_cls)

__all__ = [
    "ALIASES",
    "LAYERS",
    "REQUIRED",
    "AvgPool",
    "BatchNorm",
    "BatchNormPlan",
    "Conv",
    "ConvPlan",
    "Dense",
    "DensePlan",
    "Dropout",
    "DropoutPlan",
    "FieldSpec",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "MaxPool",
    "Parameters",
    "Plan",
    "PoolPlan",
    "build",
    "canonical",
    "get",
    "layer_error",
    "names",
    "register",
]
