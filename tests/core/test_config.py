"""Config validation: every error names the layer index, its type and the cause; defaults,
"same" padding, caps that refuse absurd configs before allocating, and the seed's lists."""

import re
import time
import tracemalloc

import numpy as np
import pytest

from cnn_core import ConfigError, Network
from cnn_core.config import MAX_LAYERS, from_seed_lists, normalize

SOFTMAX = {"type": "dense", "units": 3, "activation": "softmax"}


def net_config(*layers, input_shape=(1, 8, 8), output=True):
    return {"input_shape": list(input_shape), "layers": [*layers, *([SOFTMAX] if output else [])]}


def conv(**kw):
    return {"type": "conv", "filters": 2, "kernel_size": 3, **kw}


def refused(config, pattern):
    """Assert that building ``config`` raises ConfigError whose message matches ``pattern``."""
    with pytest.raises(ConfigError) as info:
        Network.from_config(config)
    assert re.search(pattern, str(info.value)), str(info.value)
    return str(info.value)


# ----------------------------------------------------------------------------- layer errors


ERRORS = {
    "kernel-larger-than-input": (
        net_config(conv(kernel_size=1), {"type": "maxpool", "pool_size": 2}, conv(kernel_size=5)),
        r"^layer 2 \(conv\): kernel 5 does not fit input 4x4",
    ),
    "kernel-larger-than-padded-input": (
        net_config(conv(kernel_size=5, padding=1), input_shape=(1, 2, 2)),
        r"^layer 0 \(conv\): kernel 5 does not fit input 2x2 \(padded to 4x4\)",
    ),
    "non-square-kernel-too-wide": (
        net_config(conv(kernel_size=[2, 9]), input_shape=(1, 8, 8)),
        r"^layer 0 \(conv\): kernel 2x9 does not fit input 8x8",
    ),
    "pool-shrinks-to-zero": (
        net_config(conv(kernel_size=3), {"type": "maxpool", "pool_size": 3}, input_shape=(1, 4, 4)),
        r"^layer 1 \(maxpool\): pool 3 does not fit input 2x2: the output would shrink to zero",
    ),
    "avgpool-shrinks-to-zero": (
        net_config(
            {"type": "avgpool", "pool_size": 2},
            {"type": "avgpool", "pool_size": [1, 3]},
            input_shape=(1, 4, 4),
        ),
        r"^layer 1 \(avgpool\): pool 1x3 does not fit input 2x2",
    ),
    "softmax-not-last-dense": (
        net_config({"type": "dense", "units": 4, "activation": "softmax"}),
        r"^layer 0 \(dense\): softmax is only allowed on the last layer",
    ),
    "softmax-not-last-conv": (
        net_config(conv(), conv(activation="softmax")),
        r"^layer 1 \(conv\): softmax is only allowed on the last layer",
    ),
    "unknown-type": (
        net_config(conv(), {"type": "relu"}),
        r"^layer 1: unknown type 'relu' "
        r"\(expected one of conv, maxpool, avgpool, flatten, dense",
    ),
    "missing-type": (net_config({"units": 3}, output=False), r"^layer 0: unknown type None"),
    "unhashable-type": (net_config({"type": ["conv"]}), r"^layer 0: unknown type \['conv'\]"),
    "layer-not-an-object": (net_config("conv"), r"^layer 0: must be an object with a 'type'"),
    "unknown-field-conv": (
        net_config(conv(kernal_size=3)),
        r"^layer 0 \(conv\): unknown field\(s\) \['kernal_size'\] \(allowed: activation, filters",
    ),
    "unknown-field-pool": (
        net_config({"type": "maxpool", "pool_size": 2, "padding": 1}),
        r"^layer 0 \(maxpool\): unknown field\(s\) \['padding'\]",
    ),
    "unknown-field-flatten": (
        net_config({"type": "flatten", "units": 3}),
        r"^layer 0 \(flatten\): unknown field\(s\) \['units'\] \(allowed: none\)",
    ),
    "unknown-field-fc-alias": (
        net_config({"type": "fc", "units": 3, "filters": 2}),
        r"^layer 0 \(dense\): unknown field\(s\) \['filters'\]",
    ),
    "unknown-activation": (
        net_config(conv(activation="gelu")),
        r"^layer 0 \(conv\): unknown activation 'gelu' \(expected one of relu, leaky_relu, sigmoid",
    ),
    "missing-filters": (
        net_config({"type": "conv", "kernel_size": 3}),
        r"^layer 0 \(conv\): missing field 'filters'",
    ),
    "missing-kernel-size": (
        net_config({"type": "conv", "filters": 3}),
        r"^layer 0 \(conv\): missing field 'kernel_size'",
    ),
    "missing-pool-size": (
        net_config({"type": "avgpool"}),
        r"^layer 0 \(avgpool\): missing field 'pool_size'",
    ),
    "missing-units": (net_config({"type": "dense"}), r"^layer 0 \(dense\): missing field 'units'"),
    "dense-then-conv": (
        net_config({"type": "dense", "units": 4}, conv()),
        r"^layer 1 \(conv\): needs a \(channels, height, width\) input, got \[4\]",
    ),
    "flatten-then-pool": (
        net_config({"type": "flatten"}, {"type": "maxpool", "pool_size": 2}),
        r"^layer 1 \(maxpool\): needs a \(channels, height, width\) input, got \[64\]",
    ),
}


@pytest.mark.parametrize("config, pattern", ERRORS.values(), ids=ERRORS.keys())
def test_layer_errors_name_the_layer_and_the_cause(config, pattern):
    message = refused(config, pattern)
    with pytest.raises(ConfigError) as info:
        normalize(config)
    assert info.value.layer == int(re.match(r"layer (\d+)", message).group(1))  # for a locator


NON_POSITIVE = {
    "filters-0": (conv(filters=0), "conv", "filters", "0"),
    "filters-negative": (conv(filters=-2), "conv", "filters", "-2"),
    "filters-bool": (conv(filters=True), "conv", "filters", "True"),
    "filters-float": (conv(filters=2.0), "conv", "filters", "2.0"),
    "filters-string": (conv(filters="2"), "conv", "filters", "'2'"),
    "kernel-0": (conv(kernel_size=0), "conv", "kernel_size", "0"),
    "kernel-pair-0": (conv(kernel_size=[3, 0]), "conv", "kernel_size", "0"),
    "conv-stride-0": (conv(stride=0), "conv", "stride", "0"),
    "conv-stride-negative": (conv(stride=-1), "conv", "stride", "-1"),
    "pool-size-0": ({"type": "maxpool", "pool_size": 0}, "maxpool", "pool_size", "0"),
    "pool-stride-0": ({"type": "avgpool", "pool_size": 2, "stride": 0}, "avgpool", "stride", "0"),
    "units-0": ({"type": "dense", "units": 0}, "dense", "units", "0"),
    "units-negative": ({"type": "fc", "units": -5}, "dense", "units", "-5"),
}


@pytest.mark.parametrize(
    "layer, kind, field, value", NON_POSITIVE.values(), ids=NON_POSITIVE.keys()
)
def test_non_positive_sizes(layer, kind, field, value):
    refused(
        net_config(layer),
        rf"^layer 0 \({kind}\): {field} must be a positive integer, "
        rf"got {re.escape(value)}$",
    )


@pytest.mark.parametrize("units", ["10", None, 2.5, 0], ids=["string", "null", "float", "zero"])
def test_bad_units_on_the_output_layer(units):
    # the default output activation depends on units: a bad value must still be a ConfigError
    refused(
        net_config({"type": "dense", "units": units}, output=False),
        r"^layer 0 \(dense\): units must be a positive integer",
    )


def test_size_pair_of_wrong_length():
    refused(
        net_config(conv(kernel_size=[3, 3, 3])),
        r"^layer 0 \(conv\): kernel_size must be an int or a pair, got \[3, 3, 3\]",
    )
    refused(
        net_config({"type": "maxpool", "pool_size": 2, "stride": []}),
        r"^layer 0 \(maxpool\): stride must be an int or a pair",
    )


@pytest.mark.parametrize(
    "padding",
    [-1, "full", "SAME", [1, 2, 3], 1.5, True, [1, -1], {}, None],
    ids=[
        "negative",
        "full",
        "upper-case-same",
        "triple",
        "float",
        "bool",
        "negative-in-pair",
        "object",
        "null",
    ],
)
def test_bad_padding(padding):
    refused(
        net_config(conv(padding=padding)),
        r"^layer 0 \(conv\): padding must be a non-negative int, a pair, 'same' or 'valid', "
        rf"got {re.escape(repr(padding))}$",
    )


OUTPUT_ERRORS = {
    "last-conv": ([conv()], r"^layer 0 \(conv\): the last layer must be dense"),
    "last-pool": (
        [conv(), {"type": "maxpool", "pool_size": 2}],
        r"^layer 1 \(maxpool\): the last layer must be dense",
    ),
    "last-flatten": ([{"type": "flatten"}], r"^layer 0 \(flatten\): the last layer must be dense"),
    "last-relu": (
        [{"type": "dense", "units": 3, "activation": "relu"}],
        (
            r"^layer 0 \(dense\): the last layer's activation must be softmax or sigmoid, "
            r"got 'relu'"
        ),
    ),
    "last-linear": (
        [{"type": "dense", "units": 1, "activation": "linear"}],
        r"^layer 0 \(dense\): the last layer's activation must be softmax or sigmoid",
    ),
    "softmax-one-unit": (
        [{"type": "dense", "units": 1, "activation": "softmax"}],
        r"^layer 0 \(dense\): softmax needs at least 2 units; use one sigmoid",
    ),
    "sigmoid-three-units": (
        [conv(), {"type": "dense", "units": 3, "activation": "sigmoid"}],
        r"^layer 1 \(dense\): a sigmoid output must have 1 unit .*got 3",
    ),
}


@pytest.mark.parametrize("layers, pattern", OUTPUT_ERRORS.values(), ids=OUTPUT_ERRORS.keys())
def test_output_layer_rules(layers, pattern):
    refused({"input_shape": [1, 8, 8], "layers": layers}, pattern)


TOP_LEVEL = {
    "not-a-dict": ([SOFTMAX], r"^a config must be a dict, got list"),
    "unknown-field": (
        {"input_shape": [1, 4, 4], "layers": [SOFTMAX], "optimizer": "adam"},
        r"unknown config field\(s\) \['optimizer'\]",
    ),
    "no-input-shape": ({"layers": [SOFTMAX]}, r"config needs input_shape"),
    "no-layers": ({"input_shape": [1, 4, 4]}, r"config needs a non-empty list of layers"),
    "empty-layers": ({"input_shape": [1, 4, 4], "layers": []}, r"non-empty list of layers"),
    "layers-not-a-list": (
        {"input_shape": [1, 4, 4], "layers": {"0": SOFTMAX}},
        r"non-empty list of layers",
    ),
    "input-shape-2d": (
        {"input_shape": [28, 28], "layers": [SOFTMAX]},
        r"input_shape must be \[channels, height, width\], got \[28, 28\]",
    ),
    "input-shape-string": (
        {"input_shape": "1,28,28", "layers": [SOFTMAX]},
        r"input_shape must be \[channels, height, width\]",
    ),
    "input-shape-zero": (
        {"input_shape": [1, 0, 28], "layers": [SOFTMAX]},
        r"input_shape entries must be positive integers, got \[1, 0, 28\]",
    ),
    "input-shape-float": (
        {"input_shape": [1, 28.0, 28], "layers": [SOFTMAX]},
        r"input_shape entries must be positive integers",
    ),
    "input-shape-bool": (
        {"input_shape": [True, 28, 28], "layers": [SOFTMAX]},
        r"input_shape entries must be positive integers",
    ),
    "too-many-channels": ({"input_shape": [65, 8, 8], "layers": [SOFTMAX]}, r"too large"),
    "too-wide": ({"input_shape": [1, 8, 4097], "layers": [SOFTMAX]}, r"too large"),
    "too-many-layers": (
        {"input_shape": [1, 4, 4], "layers": [{"type": "flatten"}] * MAX_LAYERS + [SOFTMAX]},
        rf"{MAX_LAYERS + 1} layers is more than the limit of {MAX_LAYERS}",
    ),
}


@pytest.mark.parametrize("config, pattern", TOP_LEVEL.values(), ids=TOP_LEVEL.keys())
def test_top_level_errors(config, pattern):
    refused(config, pattern)


def test_bad_dtype():
    with pytest.raises(ConfigError, match="dtype must be one of float32, float64, got 'float16'"):
        Network.from_config(net_config(conv()), dtype="float16")


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Network.from_config(net_config(conv(filters=0)))


# ----------------------------------------------------------------------------------- caps


CAPS = {
    "dense-1e9-units": (
        net_config({"type": "dense", "units": 10**9}),
        r"^layer 0 \(dense\): the network would exceed 50,000,000 parameters",
    ),
    "dense-1e100-units": (
        net_config({"type": "dense", "units": 10**100}),
        r"^layer 0 \(dense\): the network would exceed",
    ),
    "params-add-up-over-layers": (
        net_config(*[{"type": "dense", "units": 3000} for _ in range(8)]),
        r"^layer 6 \(dense\): the network would exceed 50,000,000 parameters",
    ),
    "conv-1e6-filters": (
        net_config(conv(filters=10**6, kernel_size=1), input_shape=(3, 64, 64)),
        r"^layer 0 \(conv\): the network would keep more than 16,000,000 values per sample",
    ),
    "huge-kernel-with-huge-padding": (
        net_config(conv(kernel_size=10**6, padding=10**6), input_shape=(3, 8, 8)),
        r"^layer 0 \(conv\): the network would exceed",
    ),
    "huge-padding": (
        net_config(conv(padding=10**9)),
        r"^layer 0 \(conv\): the network would keep more than",
    ),
    "large-input-wide-conv": (
        net_config(conv(filters=64, kernel_size=1), input_shape=(64, 4096, 4096)),
        r"^layer 0 \(conv\): the network would keep more than",
    ),
}


@pytest.mark.parametrize("config, pattern", CAPS.values(), ids=CAPS.keys())
def test_caps_refuse_quickly_without_allocating(config, pattern):
    tracemalloc.start()
    try:
        started = time.perf_counter()
        refused(config, pattern)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1_000_000, f"{peak:,} bytes allocated before refusing"


def test_a_config_just_under_the_parameter_cap_is_accepted():
    # about 45M parameters: allowed (validation only, nothing is built here)
    config = net_config({"type": "dense", "units": 44_000}, input_shape=(1, 32, 32))
    _, plans = normalize(config)
    assert sum(p.param_count for p in plans) < 50_000_000


# -------------------------------------------------------------------- defaults, normalization


def test_defaults_are_filled_in():
    config = {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv", "filters": 2, "kernel_size": 3},
            {"type": "maxpool", "pool_size": 2},
            {"type": "fc", "units": 4},
            {"type": "dense", "units": 3},
        ],
    }
    normalized, plans = normalize(config)
    assert normalized["layers"] == [
        {
            "type": "conv",
            "filters": 2,
            "kernel_size": 3,
            "stride": 1,
            "padding": 0,
            "activation": "relu",
            "init": "he",
        },
        {"type": "maxpool", "pool_size": 2, "stride": 2},
        {"type": "dense", "units": 4, "activation": "relu", "init": "he"},
        {"type": "dense", "units": 3, "activation": "softmax", "init": "glorot"},
    ]
    assert [p.output_shape for p in plans] == [(2, 6, 6), (2, 3, 3), (4,), (3,)]
    assert plans[2].input_shape == (2, 3, 3)  # implied flatten: dense sees the 3-D shape
    assert plans[2].param_count == 4 * 18 + 4


def test_init_defaults_by_activation_and_takes_the_pytorch_rule():
    config = {
        "input_shape": [3, 8, 8],
        "layers": [
            {"type": "conv", "filters": 4, "kernel_size": 3, "init": "pytorch"},
            {"type": "conv", "filters": 4, "kernel_size": 3, "activation": "tanh"},
            {"type": "dense", "units": 50, "init": "he", "activation": "linear"},
            {"type": "dense", "units": 3},
        ],
    }
    net = Network.from_config(config, seed=0, dtype="float64")
    assert [spec["init"] for spec in net.config["layers"]] == ["pytorch", "glorot", "he", "glorot"]
    bound = 1 / np.sqrt(3 * 9)  # PyTorch's: uniform in +-1/sqrt(fan_in), biases as well
    for name in ("0.W", "0.b"):
        assert np.abs(net.params[name]).max() <= bound
        assert np.abs(net.params[name]).max() > 0.5 * bound
    assert not net.params["1.b"].any() and not net.params["2.b"].any()
    assert net.params["2.W"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.05)  # he: 2/fan_in
    with pytest.raises(ConfigError, match=r"layer 0 \(conv\): init must be one of he, glorot"):
        normalize(net_config({"type": "conv", "filters": 2, "kernel_size": 3, "init": "xavier"}))


def test_one_unit_output_defaults_to_sigmoid():
    normalized, plans = normalize(net_config({"type": "dense", "units": 1}, output=False))
    assert normalized["layers"][0]["activation"] == "sigmoid"
    assert plans[-1].activation == "sigmoid"


def test_pairs_are_normalized_and_compacted():
    normalized, plans = normalize(
        net_config(
            conv(kernel_size=[3, 3], stride=[2, 1], padding=[1, 0]),
            {"type": "avgpool", "pool_size": [2, 1]},
            input_shape=(1, 9, 8),
        )
    )
    conv_spec, pool_spec = normalized["layers"][:2]
    assert conv_spec["kernel_size"] == 3 and conv_spec["stride"] == [2, 1]
    assert plans[0].kernel_size == (3, 3) and plans[0].stride == (2, 1)
    assert plans[0].padding == (1, 1, 0, 0)
    assert plans[0].output_shape == (2, (9 + 2 - 3) // 2 + 1, (8 - 3) // 1 + 1)  # (2, 5, 6)
    assert pool_spec == {"type": "avgpool", "pool_size": [2, 1], "stride": [2, 1]}
    assert plans[1].output_shape == (2, 2, 6)


@pytest.mark.parametrize(
    "size, k, stride, pads, out",
    [
        (8, 3, 1, (1, 1), 8),
        (8, 5, 1, (2, 2), 8),
        (8, 2, 1, (0, 1), 8),  # even kernel: the extra pixel goes to the bottom/right
        (8, 4, 1, (1, 2), 8),
        (7, 3, 2, (1, 1), 4),  # ceil(7 / 2) = 4: total = 3*2 + 3 - 7 = 2
        (8, 3, 2, (0, 1), 4),  # total = 3*2 + 3 - 8 = 1
        (8, 4, 2, (1, 1), 4),  # total = 6 + 4 - 8 = 2
        (9, 1, 3, (0, 0), 3),  # total = 6 + 1 - 9 < 0 -> 0
        (5, 5, 1, (2, 2), 5),
    ],
    ids=[
        "n8-k3",
        "n8-k5",
        "n8-k2-even",
        "n8-k4-even",
        "n7-k3-s2",
        "n8-k3-s2",
        "n8-k4-s2",
        "n9-k1-s3",
        "n5-k5",
    ],
)
def test_same_padding(size, k, stride, pads, out):
    _, plans = normalize(
        net_config(conv(kernel_size=k, stride=stride, padding="same"), input_shape=(1, size, size))
    )
    assert plans[0].padding == (*pads, *pads)
    assert plans[0].output_shape == (2, out, out)


def test_valid_padding_is_zero():
    _, plans = normalize(net_config(conv(padding="valid")))
    assert plans[0].padding == (0, 0, 0, 0) and plans[0].output_shape == (2, 6, 6)


def test_a_normalized_config_builds_the_same_network():
    config = net_config(
        conv(padding="same"),
        {"type": "avgpool", "pool_size": 3, "stride": 2},
        {"type": "fc", "units": 5},
    )
    normalized, _ = normalize(config)
    assert normalize(normalized)[0] == normalized
    a, b = Network.from_config(config, seed=3), Network.from_config(normalized, seed=3)
    assert a.config == b.config == normalized
    assert all((a.params[k] == b.params[k]).all() for k in a.params)


# -------------------------------------------------------------------------- the seed's lists


SEED_LENET = {
    "input_shape": [3, 32, 32],
    "architecture": ["init", "conv", "maxpool", "conv", "maxpool", "fc", "fc"],
    "activations": ["init", "relu", "relu", "relu", "relu", "relu", "sigmoid"],
    "filter_size": [0, 5, 2, 5, 2, 1, 1],
    "nb_kernel": [3, 8, 8, 16, 16, 120, 84],
    "padding": [0, 0, 0, 0, 0, 0, 0],
    "stride": [0, 1, 2, 1, 2, 0, 0],
}


def seed_lists(**changes):
    config = {k: list(v) if isinstance(v, list) else v for k, v in SEED_LENET.items()}
    config.update(changes)
    return config


def with_output(config, units=1, activation="sigmoid"):
    """The seed's lists end at its 84-unit layer (its code appended a 2-unit output)."""
    config = seed_lists(**config)
    config["activations"][-1] = "relu"
    for key, value in (
        ("architecture", "fc"),
        ("activations", activation),
        ("filter_size", 1),
        ("nb_kernel", units),
        ("padding", 0),
        ("stride", 0),
    ):
        config[key] = config[key] + [value]
    return config


def test_seed_lenet_lists_are_converted():
    assert from_seed_lists(SEED_LENET) == {
        "input_shape": [3, 32, 32],
        "layers": [
            {
                "type": "conv",
                "filters": 8,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
                "activation": "relu",
            },
            {"type": "maxpool", "pool_size": 2, "stride": 2},
            {
                "type": "conv",
                "filters": 16,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
                "activation": "relu",
            },
            {"type": "maxpool", "pool_size": 2, "stride": 2},
            {"type": "dense", "units": 120, "activation": "relu"},
            {"type": "dense", "units": 84, "activation": "sigmoid"},
        ],
    }


def test_seed_lenet_lists_as_written_have_no_valid_output():
    # the notebook's last entry is an 84-unit sigmoid layer; its real output (2 units) was
    # hard-coded elsewhere. As an output layer, 84 sigmoid units cannot be.
    refused(SEED_LENET, r"^layer 5 \(dense\): a sigmoid output must have 1 unit")


@pytest.mark.parametrize("units, activation", [(1, "sigmoid"), (10, "softmax")])
def test_seed_lenet_lists_with_an_output_build(units, activation):
    net = Network.from_config(with_output({}, units, activation), seed=0)
    # the seed notebook's get_layer_shape printed these shapes for its LeNet
    assert [s["output_shape"] for s in net.summary()] == [
        [8, 28, 28],
        [8, 14, 14],
        [16, 10, 10],
        [16, 5, 5],
        [120],
        [84],
        [units],
    ]
    assert net.output == activation
    assert net.config["layers"][5] == {
        "type": "dense",
        "units": 84,
        "activation": "relu",
        "init": "he",
    }


def test_seed_lists_zero_strides_mean_defaults():
    config = with_output({"stride": [0, 0, 0, 0, 0, 0, 0]})
    layers = from_seed_lists(config)["layers"]
    assert layers[0]["stride"] == 1 and layers[1]["stride"] == 2


def test_seed_lists_padding_and_avgpool():
    config = with_output(
        {
            "architecture": ["init", "conv", "avgpool", "conv", "maxpool", "fc", "fc"],
            "padding": [0, 2, 0, "same", 0, 0, 0],
        }
    )
    net = Network.from_config(config)
    assert [s["output_shape"] for s in net.summary()][:4] == [
        [8, 32, 32],
        [8, 16, 16],
        [16, 16, 16],
        [16, 8, 8],
    ]
    assert net.config["layers"][1]["type"] == "avgpool"


SEED_ERRORS = {
    "missing-list": (
        {k: v for k, v in SEED_LENET.items() if k != "stride"},
        r"needs the lists stride",
    ),
    "different-lengths": (seed_lists(padding=[0] * 6), r"must all be lists of the same length"),
    "not-a-list": (
        seed_lists(stride=(0, 1, 2, 1, 2, 0, 0)),
        r"must all be lists of the same length",
    ),
    "no-init": (
        seed_lists(architecture=["conv", "conv", "maxpool", "conv", "maxpool", "fc", "fc"]),
        r"starts with 'init'",
    ),
    "channels-mismatch": (
        seed_lists(nb_kernel=[1, 8, 8, 16, 16, 120, 84]),
        r"nb_kernel\[0\] is 1 but input_shape has 3 channels",
    ),
    "unknown-entry": (
        seed_lists(architecture=["init", "conv", "dropout", "conv", "maxpool", "fc", "fc"]),
        r"^layer 1: unknown seed architecture entry 'dropout'",
    ),
    "unhashable-entry": (
        seed_lists(architecture=["init", ["conv"], "maxpool", "conv", "maxpool", "fc", "fc"]),
        r"^layer 0: unknown seed architecture entry \['conv'\]",
    ),
    "padding-on-pool": (
        seed_lists(padding=[0, 0, 1, 0, 0, 0, 0]),
        r"^layer 1 \(maxpool\): padding is not supported for pooling",
    ),
    "unknown-field": (
        seed_lists(layers=[]),
        r"unknown field\(s\) \['layers'\] in a seed-style config",
    ),
    "no-input-shape": (
        {k: v for k, v in SEED_LENET.items() if k != "input_shape"},
        r"needs input_shape",
    ),
    "kernel-too-big": (
        seed_lists(filter_size=[0, 5, 2, 5, 2, 1, 1], input_shape=[3, 12, 12]),
        r"^layer 2 \(conv\): kernel 5 does not fit input 4x4",
    ),
    "non-positive-units": (
        seed_lists(nb_kernel=[3, 8, 8, 16, 16, 0, 84]),
        r"^layer 4 \(dense\): units must be a positive integer, got 0",
    ),
}


@pytest.mark.parametrize("config, pattern", SEED_ERRORS.values(), ids=SEED_ERRORS.keys())
def test_seed_list_errors(config, pattern):
    refused(config, pattern)
