"""Parity with PyTorch (float64) on randomized configurations, and optimizer steps vs torch.optim.

Our weight layout is PyTorch's (conv W (out, in, kh, kw), dense W (units, in) over a (C, H, W)
flatten), so weights are copied one to one. The torch model is built independently of
cnn_core's config code: shapes and "same" pads are recomputed here from their definitions.
"""

import math

import numpy as np
import pytest

from cnn_core import ConfigError, Network, optimizers
from cnn_core import functional as F

torch = pytest.importorskip("torch")
# torch's padding="same" with an even kernel warns that it copies the input: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
nn = torch.nn
TF = torch.nn.functional

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "linear"]
TORCH_ACTIVATIONS = {
    "relu": torch.relu,
    "leaky_relu": TF.leaky_relu,  # negative_slope 0.01, its default
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "linear": lambda t: t,
}


def same_pads(n, k, s):
    """TensorFlow's "same": output ceil(n / s), the odd pixel of padding at the bottom/right."""
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def random_config(seed):
    """A random valid config, with the shapes computed here (not by cnn_core)."""
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(6, 13)), int(rng.integers(6, 13))
    input_shape = [c, h, w]
    layers = []
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.choice([1, 2, 3, 5]))
        stride = int(rng.integers(1, 3))
        padding = "same" if rng.random() < 0.4 else int(rng.integers(0, 3))
        if padding == "same":
            top, bottom = same_pads(h, k, stride)
            left, right = same_pads(w, k, stride)
        else:
            top = bottom = left = right = padding
        if k > h + top + bottom or k > w + left + right:
            continue
        layers.append(
            {
                "type": "conv",
                "filters": int(rng.integers(1, 5)),
                "kernel_size": k,
                "stride": stride,
                "padding": padding,
                "activation": str(rng.choice(ACTIVATIONS)),
            }
        )
        h = (h + top + bottom - k) // stride + 1
        w = (w + left + right - k) // stride + 1
        if rng.random() < 0.7:
            pool = int(rng.integers(2, 4))
            pstride = int(rng.integers(1, 4))
            if pool <= h and pool <= w:
                kind = str(rng.choice(["maxpool", "avgpool"]))
                layers.append({"type": kind, "pool_size": pool, "stride": pstride})
                h, w = (h - pool) // pstride + 1, (w - pool) // pstride + 1
    if rng.random() < 0.3:
        layers.append({"type": "flatten"})
    for _ in range(int(rng.integers(0, 3))):
        layers.append(
            {
                "type": "dense",
                "units": int(rng.integers(2, 7)),
                "activation": str(rng.choice(ACTIVATIONS)),
            }
        )
    if rng.random() < 0.3:
        layers.append({"type": "dense", "units": 1, "activation": "sigmoid"})
    else:
        layers.append({"type": "dense", "units": int(rng.integers(2, 6)), "activation": "softmax"})
    return {"input_shape": input_shape, "layers": layers}


class TorchNet(nn.Module):
    """The torch twin of a config; ``same_native`` uses torch's own padding="same" (stride 1)."""

    def __init__(self, config, same_native=True):
        super().__init__()
        self.steps = []
        self.mods = nn.ModuleList()
        c, h, w = config["input_shape"]
        shape3d = True
        for spec in config["layers"]:
            kind = spec["type"]
            if kind == "conv":
                k, s, p = spec["kernel_size"], spec["stride"], spec["padding"]
                if p == "same" and s == 1 and same_native:
                    mod = nn.Conv2d(
                        c, spec["filters"], k, stride=s, padding="same", dtype=torch.float64
                    )
                    pads = None
                    h2, w2 = h, w
                elif p == "same":
                    mod = nn.Conv2d(c, spec["filters"], k, stride=s, dtype=torch.float64)
                    top, bottom = same_pads(h, k, s)
                    left, right = same_pads(w, k, s)
                    pads = (left, right, top, bottom)  # F.pad order: last axis first
                    h2 = (h + top + bottom - k) // s + 1
                    w2 = (w + left + right - k) // s + 1
                else:
                    mod = nn.Conv2d(c, spec["filters"], k, stride=s, padding=p, dtype=torch.float64)
                    pads = None
                    h2, w2 = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
                self.mods.append(mod)
                self.steps.append(("conv", mod, pads, TORCH_ACTIVATIONS[spec["activation"]]))
                c, h, w = spec["filters"], h2, w2
            elif kind in ("maxpool", "avgpool"):
                cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
                mod = cls(spec["pool_size"], stride=spec["stride"])
                self.steps.append(("pool", mod, None, None))
                h = (h - spec["pool_size"]) // spec["stride"] + 1
                w = (w - spec["pool_size"]) // spec["stride"] + 1
            elif kind == "flatten":
                self.steps.append(("flatten", None, None, None))
                c, shape3d = c * h * w, False
            else:
                features = c * h * w if shape3d else c
                mod = nn.Linear(features, spec["units"], dtype=torch.float64)
                self.mods.append(mod)
                last = spec is config["layers"][-1]  # its activation lives in the loss
                act = None if last else TORCH_ACTIVATIONS[spec["activation"]]
                self.steps.append(("dense", mod, None, act))
                c, shape3d = spec["units"], False

    def forward(self, x):
        for kind, mod, pads, act in self.steps:
            if kind == "conv":
                if pads is not None:
                    x = TF.pad(x, pads)
                x = act(mod(x))
            elif kind == "pool":
                x = mod(x)
            elif kind == "flatten":
                x = torch.flatten(x, 1)
            else:
                if x.ndim == 4:
                    x = torch.flatten(x, 1)
                x = mod(x)
                if act is not None:
                    x = act(x)
        return x

    def param_pairs(self, config):
        """(our name, torch parameter) for every weight and bias."""
        mods = iter(self.mods)
        pairs = []
        for i, spec in enumerate(config["layers"]):
            if spec["type"] in ("conv", "dense", "fc"):
                mod = next(mods)
                pairs += [(f"{i}.W", mod.weight), (f"{i}.b", mod.bias)]
        return pairs


def twin(config, seed, same_native=True):
    """Our float64 network (random biases) and a torch model holding the same weights."""
    net = Network.from_config(config, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 7)
    for name, p in net.params.items():
        if name.endswith(".b"):
            p[...] = rng.normal(0, 0.3, p.shape)
    model = TorchNet(net.config, same_native=same_native)
    pairs = model.param_pairs(net.config)
    assert sorted(name for name, _ in pairs) == sorted(net.params)
    with torch.no_grad():
        for name, tp in pairs:
            assert tuple(tp.shape) == net.params[name].shape, name
            tp.copy_(torch.from_numpy(net.params[name]))
    return net, model, pairs


def torch_loss(net, logits, y):
    if net.output == "sigmoid":
        return TF.binary_cross_entropy_with_logits(logits, torch.from_numpy(y[:, None] * 1.0))
    return TF.cross_entropy(logits, torch.from_numpy(y))


def data_for(net, n, seed):
    rng = np.random.default_rng(seed + 13)
    X = rng.standard_normal((n, *net.input_shape))
    y = rng.integers(0, net.n_classes, n)
    return X, y


def assert_close(ours, theirs, what, config, rtol=1e-9, atol=1e-11):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    try:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)
    except AssertionError as e:
        raise AssertionError(f"{e}\nfailing config: {config}") from None


SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_random_config_forward_loss_and_gradients(seed):
    config = random_config(seed)
    try:
        net, model, pairs = twin(config, seed)
    except ConfigError as e:  # a config the test generator thinks valid must build
        raise AssertionError(f"{e!r}\nfailing config: {config}") from None
    X, y = data_for(net, 5, seed)
    Xt = torch.from_numpy(X.copy()).requires_grad_(True)
    logits = model(Xt)
    probs = torch.sigmoid(logits) if net.output == "sigmoid" else torch.softmax(logits, 1)
    assert_close(net.logits(X), logits, "logits", config)
    assert_close(net.predict_proba(X), probs, "probabilities", config)
    loss_t = torch_loss(net, logits, y)
    loss_t.backward()
    loss, grads = net.loss_and_grads(X, y)
    assert_close(loss, loss_t, "loss", config, rtol=1e-12)
    for name, tp in pairs:
        assert_close(grads[name], tp.grad, f"gradient of {name}", config)
    # the gradient with respect to the input, through a test-only path
    saved = [layer.need_dx for layer in net.layers]
    for layer in net.layers:
        layer.need_dx = True
    z = net._forward(net._to_internal(X), train=True)
    d = net._loss(z, y)[1]
    for layer in reversed(net.layers):
        d = layer.backward(d)
    for layer, need in zip(net.layers, saved, strict=True):
        layer.need_dx = need
    assert_close(d.transpose(3, 0, 1, 2), Xt.grad, "gradient of the input", config)


def test_random_configs_cover_every_mode():
    """The randomized configs above really reach every branch they are meant to test."""
    seen = set()
    for seed in SEEDS:
        for spec in random_config(seed)["layers"]:
            kind = spec["type"]
            seen.add(kind)
            if kind == "conv":
                seen |= {
                    f"k{spec['kernel_size']}",
                    f"conv-stride{spec['stride']}",
                    "same" if spec["padding"] == "same" else f"pad{min(spec['padding'], 1)}",
                    spec["activation"],
                }
                if spec["padding"] == "same" and spec["kernel_size"] % 2 == 0:
                    seen.add("same-even")
            if kind.endswith("pool") and spec["stride"] < spec["pool_size"]:
                seen.add("overlapping")
            if kind == "dense":
                seen.add(spec["activation"])
                if spec["units"] == 1:
                    seen.add("sigmoid-output")
    wanted = {
        "conv",
        "maxpool",
        "avgpool",
        "flatten",
        "dense",
        "k1",
        "k2",
        "k3",
        "k5",
        "conv-stride1",
        "conv-stride2",
        "same",
        "same-even",
        "pad0",
        "pad1",
        "overlapping",
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "linear",
        "softmax",
        "sigmoid-output",
    }
    assert wanted <= seen, wanted - seen


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("size", [5, 6])
def test_same_padding_matches_torch_native_same(k, size):
    """Even kernels: ours pads the extra pixel at the bottom/right, as torch's padding="same"."""
    config = {
        "input_shape": [2, size, size + 1],
        "layers": [
            {
                "type": "conv",
                "filters": 3,
                "kernel_size": k,
                "padding": "same",
                "activation": "linear",
            },
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    }
    net, model, _ = twin(config, seed=k)
    X, _ = data_for(net, 3, k)
    # compare the conv output maps directly, against both torch spellings of the padding
    conv = model.mods[0]
    Xt = torch.from_numpy(X)
    top, bottom = same_pads(size, k, 1)
    left, right = same_pads(size + 1, k, 1)
    native = conv(Xt)
    explicit = TF.conv2d(TF.pad(Xt, (left, right, top, bottom)), conv.weight, conv.bias)
    ours, _ = F.conv_forward(
        net._to_internal(X), net.params["0.W"], net.params["0.b"], (1, 1), net.plans[0].padding
    )
    assert net.plans[0].padding == (top, bottom, left, right)
    assert_close(ours.transpose(3, 0, 1, 2), native, "same (torch native)", config)
    assert_close(ours.transpose(3, 0, 1, 2), explicit, "same (explicit pads)", config)


def test_maxpool_ties_match_torch():
    """With many ties and overlapping windows, both send the gradient to the first maximum."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 7, 7)).astype(np.float64)  # (N, C, H, W), lots of ties
    dout = rng.standard_normal((2, 3, 3, 3))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = TF.max_pool2d(xt, 3, stride=2)
    out_t.backward(torch.from_numpy(dout))
    out, cache = F.maxpool_forward(x.transpose(1, 2, 3, 0), (3, 3), (2, 2))
    dx = F.maxpool_backward(np.ascontiguousarray(dout.transpose(1, 2, 3, 0)), cache)
    np.testing.assert_array_equal(out.transpose(3, 0, 1, 2), out_t.detach().numpy())
    np.testing.assert_array_equal(dx.transpose(3, 0, 1, 2), xt.grad.numpy())


# ---------------------------------------------------------------------------------- optimizers


def random_grads(shapes, steps, seed):
    rng = np.random.default_rng(seed)
    return [
        {name: rng.standard_normal(shape) for name, shape in shapes.items()} for _ in range(steps)
    ]


OPTIMIZER_CASES = {
    "sgd": ({"name": "sgd", "learning_rate": 0.1}, lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "adam": (
        {"name": "adam", "learning_rate": 0.01, "beta1": 0.8, "beta2": 0.95, "epsilon": 1e-3},
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-3),
    ),
    "adam-defaults": ({"name": "adam"}, lambda ps: torch.optim.Adam(ps, lr=1e-3)),
    "rmsprop": (
        {"name": "rmsprop", "learning_rate": 0.01, "beta": 0.9, "epsilon": 1e-4},
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-4),
    ),
    "rmsprop-defaults": (
        {"name": "rmsprop"},
        lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.999, eps=1e-8),
    ),
}


@pytest.mark.parametrize("spec, make_torch", OPTIMIZER_CASES.values(), ids=OPTIMIZER_CASES.keys())
def test_optimizer_steps_match_torch(spec, make_torch):
    rng = np.random.default_rng(1)
    params = {
        "0.W": rng.standard_normal((3, 2, 2, 2)),
        "0.b": rng.standard_normal(3),
        "2.W": rng.standard_normal((4, 5)),
    }
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    topt = make_torch(list(tparams.values()))
    opt = optimizers.get(dict(spec))
    for grads in random_grads({k: v.shape for k, v in params.items()}, 5, seed=2):
        opt.step(params, grads)
        for k, tp in tparams.items():
            tp.grad = torch.from_numpy(grads[k].copy())
        topt.step()
    for k, p in params.items():
        np.testing.assert_allclose(
            p, tparams[k].detach().numpy(), rtol=1e-11, atol=1e-13, err_msg=k
        )


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_training_steps_match_torch(name):
    """Five steps of a whole network: our gradients + our optimizer vs torch end to end."""
    spec, make_torch = OPTIMIZER_CASES[name]
    config = {
        "input_shape": [2, 8, 8],
        "layers": [
            {"type": "conv", "filters": 3, "kernel_size": 3, "padding": 1},
            {"type": "maxpool", "pool_size": 2},
            {"type": "dense", "units": 5, "activation": "tanh"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    }
    net, model, pairs = twin(config, seed=3)
    topt = make_torch([tp for _, tp in pairs])
    opt = optimizers.get(dict(spec))
    for step in range(5):
        X, y = data_for(net, 6, seed=step)
        _, grads = net.loss_and_grads(X, y)
        opt.step(net.params, grads)
        topt.zero_grad()
        TF.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        topt.step()
    for k, tp in pairs:
        assert_close(net.params[k], tp, k, config, rtol=1e-9, atol=1e-11)


def test_momentum_matches_numpy_reference():
    """The seed's momentum (v = beta v + (1 - beta) g; p -= lr v), which torch's SGD momentum
    does not implement (its first step and its dampening differ), against a plain reference."""
    rng = np.random.default_rng(4)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    reference = {k: v.copy() for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    opt = optimizers.get({"name": "momentum", "learning_rate": 0.05, "beta": 0.8})
    for grads in random_grads({k: v.shape for k, v in params.items()}, 5, seed=5):
        opt.step(params, grads)
        for k, g in grads.items():
            velocity[k] = 0.8 * velocity[k] + 0.2 * g
            reference[k] = reference[k] - 0.05 * velocity[k]
    for k, p in params.items():
        np.testing.assert_allclose(p, reference[k], rtol=1e-14, atol=1e-15)
