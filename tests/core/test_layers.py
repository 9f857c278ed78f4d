"""The layer registry: one class per type, found by name or alias, planned from its fields."""

import pytest

from cnn_core import ConfigError, layers
from cnn_core.config import normalize


def test_get_finds_a_type_by_name_or_alias():
    assert layers.get("dense") is layers.get("fc") is layers.Dense
    assert layers.get("maxpool") is layers.MaxPool and layers.get("avgpool") is layers.AvgPool
    assert layers.names() == [
        "conv",
        "maxpool",
        "avgpool",
        "flatten",
        "dense",
        "fc",
        "batchnorm",
        "dropout",
        "globalavgpool",
    ]


@pytest.mark.parametrize("name", ["pool", "Dense", ["conv"], None])
def test_get_refuses_an_unknown_type_naming_the_choices(name):
    with pytest.raises(ConfigError, match=r"unknown layer type .*conv, maxpool"):
        layers.get(name)


def test_a_name_is_registered_once():
    class Twin(layers.Flatten):
        aliases = ("flat",)

    with pytest.raises(ValueError, match="'flatten' is registered already"):
        layers.register(Twin)
    assert "flat" not in layers.ALIASES


def test_plans_name_each_size_once():
    _, plans = normalize(
        {
            "input_shape": [1, 9, 9],
            "layers": [
                {"type": "conv", "filters": 4, "kernel_size": [3, 2], "padding": "same"},
                {"type": "avgpool", "pool_size": 3},
                {"type": "fc", "units": 2},
            ],
        }
    )
    conv, pool, dense = plans
    assert (conv.filters, conv.kernel_size, conv.stride, conv.padding) == (
        4,
        (3, 2),
        (1, 1),
        (1, 1, 0, 1),
    )
    assert (pool.pool_size, pool.stride, pool.output_shape) == ((3, 3), (3, 3), (4, 3, 3))
    assert dense.units == 2 and dense.activation == "softmax" and dense.type == "dense"
    assert conv.floats_kept == 4 * 9 * 9 + 1 * 3 * 2 * 9 * 9  # output plus im2col columns
    assert not hasattr(conv, "units") and not hasattr(pool, "kernel_size")


def test_every_field_is_declared_with_a_description():
    for cls in layers.LAYERS.values():
        for field in cls.fields:
            kinds = ("count", "size", "padding", "number", "activation", "choice")
            assert field.description and field.kind in kinds
            assert bool(field.choices) == (field.kind == "choice")
