"""Named architectures that adapt to a dataset's input shape and number of classes."""

from .errors import ConfigError


def lenet5(input_shape, n_classes):
    """LeNet-5 (LeCun et al., 1998) with relu and max pooling.

    The first convolution pads "same" on inputs under 32 pixels (MNIST's 28x28 digits were
    padded to 32x32 in the paper), so 28x28x1 with 10 classes gives the classic 61,706
    parameters. The output is a softmax over the classes, or one sigmoid unit for two classes
    (the seed's binary setting).
    """
    c, h, w = input_shape
    return {
        "input_shape": [c, h, w],
        "layers": [
            {
                "type": "conv",
                "filters": 6,
                "kernel_size": 5,
                "padding": "same" if min(h, w) < 32 else 0,
                "activation": "relu",
            },
            {"type": "maxpool", "pool_size": 2},
            {"type": "conv", "filters": 16, "kernel_size": 5, "activation": "relu"},
            {"type": "maxpool", "pool_size": 2},
            {"type": "dense", "units": 120, "activation": "relu"},
            {"type": "dense", "units": 84, "activation": "relu"},
            _output(n_classes),
        ],
    }


def convnet(input_shape, n_classes):
    """A small VGG-style network: two blocks of two 3x3 convolutions ("same" padding), each
    followed by batch norm and relu (PyTorch's ``Conv2d, BatchNorm2d, ReLU``), then 2x2 max
    pooling and dropout 0.25, with 32 then 64 filters; then a dense layer of 256 units with batch
    norm, relu and dropout 0.5, and the output layer (softmax, or one sigmoid unit for two
    classes). Weights start as PyTorch's do (``"init": "pytorch"``). Each pooling halves the
    image, so inputs from 4x4 pixels up fit; the recommended recipe, and what each choice was
    worth, are in the README."""
    c, h, w = input_shape
    layers = []
    for filters in (32, 64):
        layers += _conv_norm_relu(filters) + _conv_norm_relu(filters)
        layers += [{"type": "maxpool", "pool_size": 2}, {"type": "dropout", "rate": 0.25}]
    layers += [
        {"type": "dense", "units": 256, "activation": "linear", "init": "pytorch"},
        {"type": "batchnorm", "activation": "relu"},
        {"type": "dropout", "rate": 0.5},
        {**_output(n_classes), "init": "pytorch"},
    ]
    return {"input_shape": [c, h, w], "layers": layers}


def _conv_norm_relu(filters):
    conv = {"type": "conv", "filters": filters, "kernel_size": 3, "padding": "same"}
    return [
        conv | {"activation": "linear", "init": "pytorch"},
        {"type": "batchnorm", "activation": "relu"},
    ]


def _output(n_classes):
    """Softmax over the classes, or one sigmoid unit for two classes (the seed's setting)."""
    if n_classes > 2:
        return {"type": "dense", "units": n_classes, "activation": "softmax"}
    return {"type": "dense", "units": 1, "activation": "sigmoid"}


PRESETS = {"lenet5": lenet5, "convnet": convnet}


def build_preset(name, input_shape, n_classes):
    """The config of preset ``name`` for inputs of ``input_shape`` (C, H, W) and ``n_classes``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(PRESETS)})")
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")
    return PRESETS[name](tuple(input_shape), n_classes)
