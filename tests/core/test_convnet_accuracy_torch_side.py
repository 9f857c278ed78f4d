"""benchmarks/convnet_accuracy.py compares candidate networks (``--architecture``) with PyTorch;
its PyTorch side must be the same network, or the comparison says nothing. Each config below
covers layer types, paddings, strides and activations the builder translates."""

import numpy as np
import pytest

from benchmarks.convnet_accuracy import torch_modules
from cnn_core import Network

torch = pytest.importorskip("torch")

CONFIGS = {
    "pools and flatten": {
        "input_shape": [1, 12, 12],
        "layers": [
            {"type": "conv", "filters": 4, "kernel_size": 3, "padding": "same"},
            {"type": "batchnorm", "momentum": 0.3, "epsilon": 1e-3},
            {"type": "maxpool", "pool_size": 2},
            {"type": "dropout", "rate": 0.25},
            {
                "type": "conv",
                "filters": 6,
                "kernel_size": 3,
                "stride": 2,
                "padding": [0, 1],
                "activation": "leaky_relu",
            },
            {"type": "avgpool", "pool_size": 2, "stride": 1},
            {"type": "flatten"},
            {"type": "dense", "units": 5, "activation": "tanh"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "linear conv and globalavgpool": {
        "input_shape": [2, 9, 9],
        "layers": [
            {"type": "conv", "filters": 5, "kernel_size": 4, "padding": "same"},
            {"type": "conv", "filters": 4, "kernel_size": 3, "activation": "linear"},
            {"type": "batchnorm", "activation": "relu"},
            {"type": "globalavgpool"},
            {"type": "dense", "units": 6, "activation": "sigmoid"},
            {"type": "batchnorm"},
            {"type": "dense", "units": 4, "activation": "softmax"},
        ],
    },
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_pytorch_side_computes_the_same_network(name):
    config = CONFIGS[name]
    net = Network.from_config(config, seed=1)
    model = torch_modules(config, net).eval()
    x = np.random.default_rng(2).normal(size=(7, *config["input_shape"])).astype(np.float32)
    expected = net.predict_proba(x)
    got = torch.softmax(model(torch.from_numpy(x)), dim=1).detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # float32 rounding only
