"""PyTorch parity (float64) for what issue 11 added: batch norm after a conv and after a dense
layer (forward, loss, every gradient, running statistics after several optimizer steps),
dropout with a fixed mask, weight decay on every optimizer PyTorch shares with us, AdamW, each
learning-rate schedule, and the convnet recipe end to end through ``fit``."""

import math

import numpy as np
import pytest

from cnn_core import Network, build_preset, optimizers, schedules
from cnn_core import functional as F
from cnn_core.augmentation import Augmentation
from cnn_core.datasets import load_mnist_sample
from cnn_core.history import EpochSummary
from cnn_core.noise import StepNoise

torch = pytest.importorskip("torch")
nn = torch.nn

CONV_BN = {
    "input_shape": [2, 6, 6],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": 1, "activation": "tanh"},
        {"type": "batchnorm", "momentum": 0.3, "epsilon": 1e-3},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 5, "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "dropout", "rate": 0.4},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}
# The order convolution, batch norm, activation: the activation on the batch norm.
CONV_BN_RELU = {
    "input_shape": [2, 6, 6],
    "layers": [
        {"type": "conv", "filters": 3, "kernel_size": 3, "padding": 1, "activation": "linear"},
        {"type": "batchnorm", "momentum": 0.3, "epsilon": 1e-3, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 5, "activation": "linear"},
        {"type": "batchnorm", "activation": "tanh"},
        {"type": "dropout", "rate": 0.4},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}


def torch_twin(net):
    """A torch Sequential with ``net``'s weights, built from its config by hand."""
    modules, pairs, shape = [], [], net.input_shape
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}
    for i, spec in enumerate(net.config["layers"]):
        kind = spec["type"]
        if kind == "conv":
            m = nn.Conv2d(shape[0], spec["filters"], spec["kernel_size"], padding=spec["padding"])
            modules += [m, acts[spec["activation"]]()]
            pairs += [(f"{i}.W", m.weight), (f"{i}.b", m.bias)]
        elif kind == "dense":
            if len(shape) == 3:
                modules.append(nn.Flatten())
            m = nn.Linear(math.prod(shape), spec["units"])
            last = i == len(net.config["layers"]) - 1
            modules += [m] + ([] if last else [acts[spec["activation"]]()])
            pairs += [(f"{i}.W", m.weight), (f"{i}.b", m.bias)]
        elif kind == "batchnorm":
            cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            m = cls(shape[0], eps=spec["epsilon"], momentum=spec["momentum"])
            modules += [m, acts[spec["activation"]]()]
            pairs += [(f"{i}.gamma", m.weight), (f"{i}.beta", m.bias)]
        elif kind == "maxpool":
            modules.append(nn.MaxPool2d(spec["pool_size"]))
        elif kind == "dropout":
            modules.append(FixedMask())
        shape = net.plans[i].output_shape
    model = nn.Sequential(*modules).double()
    with torch.no_grad():
        for name, tp in pairs:
            tp.copy_(torch.from_numpy(net.params[name]))
    return model, pairs


class FixedMask(nn.Module):
    """Dropout with a mask given from outside (ours, drawn for the step)."""

    mask = None

    def forward(self, x):
        return x * self.mask if self.training else x


def biases_before_batchnorm(net):
    """The biases of conv and dense layers followed directly by a batch norm, with no
    activation between: the loss does not depend on them (the norm subtracts the batch mean),
    so their gradients are rounding noise on both sides, which AdamW's division by the
    gradient's own scale turns into steps."""
    return {
        f"{i - 1}.b"
        for i, plan in enumerate(net.plans)
        if i > 0 and plan.type == "batchnorm" and net.plans[i - 1].activation == "linear"
    }


def batchnorms(model):
    return [m for m in model if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]


def our_mask(net, noise, n):
    layer = net.layers[5]
    mask = F.dropout_mask(
        noise.rng(6), layer.plan.rate, layer.plan.input_shape, slice(0, n), net.dtype
    )
    return torch.from_numpy(np.ascontiguousarray(mask.T))


@pytest.mark.parametrize(
    "config, spec, make_torch",
    [
        (
            CONV_BN,
            {"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.05},
            lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05),
        ),
        (
            CONV_BN,
            {"name": "adamw", "learning_rate": 0.02},
            lambda ps: torch.optim.AdamW(ps, lr=0.02),
        ),
        (
            CONV_BN_RELU,
            {"name": "adamw", "learning_rate": 0.02},
            lambda ps: torch.optim.AdamW(ps, lr=0.02),
        ),
    ],
    ids=["sgd-weight-decay", "adamw", "activation-after-batchnorm"],
)
def test_batchnorm_network_steps_match_torch(config, spec, make_torch):
    """Five training steps with batch norm in both placements (followed by an activation or
    not) and a fixed dropout mask: the loss, every gradient, the parameters and the running
    statistics after each step."""
    net = Network.from_config(config, seed=2, dtype="float64")
    model, pairs = torch_twin(net)
    loose = dict.fromkeys(biases_before_batchnorm(net), 1e-9)
    opt, topt = optimizers.get(dict(spec)), make_torch([tp for _, tp in pairs])
    rng = np.random.default_rng(3)
    for step in range(1, 6):
        X, y = rng.normal(1.0, 2.0, (8, 2, 6, 6)), rng.integers(0, 3, 8)
        noise = StepNoise(0, step, 0, 8)
        loss, _, grads, updates = net.shard_step(net.layers, X, y, 8, noise)
        net.apply_buffer_updates([updates], [8])
        opt.step(net.params, grads)
        model.train()
        next(m for m in model if isinstance(m, FixedMask)).mask = our_mask(net, noise, 8)
        topt.zero_grad()
        tloss = nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
        tloss.backward()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
        for name, tp in pairs:
            np.testing.assert_allclose(
                grads[name], tp.grad.numpy(), rtol=1e-8, atol=loose.get(name, 1e-11), err_msg=name
            )
        topt.step()
        for name, tp in pairs:
            np.testing.assert_allclose(
                net.params[name],
                tp.detach().numpy(),
                rtol=1e-8,
                atol=loose.get(name, 1e-11),
                err_msg=name,
            )
        for index, bn in zip((1, 4), batchnorms(model), strict=True):
            np.testing.assert_allclose(  # a running mean holds the bias before it
                net.buffers[f"{index}.running_mean"],
                bn.running_mean,
                rtol=1e-10,
                atol=loose.get(f"{index - 1}.b", 1e-12),
            )
            np.testing.assert_allclose(
                net.buffers[f"{index}.running_var"], bn.running_var, rtol=1e-10, atol=1e-12
            )
    model.eval()
    X = rng.standard_normal((4, 2, 6, 6))
    # The running means keep the drift of the biases before them (loose), and so do the logits.
    np.testing.assert_allclose(
        net.logits(X),
        model(torch.from_numpy(X)).detach().numpy(),
        rtol=1e-8,
        atol=1e-9 if loose else 1e-10,
    )


WEIGHT_DECAY = {
    "sgd": (
        {"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.1},
        lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1),
    ),
    "adam": (
        {"name": "adam", "learning_rate": 0.01, "weight_decay": 0.2},
        lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.2),
    ),
    "rmsprop": (
        {"name": "rmsprop", "learning_rate": 0.01, "beta": 0.9, "weight_decay": 0.3},
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, weight_decay=0.3),
    ),
    "adamw-default": ({"name": "adamw"}, lambda ps: torch.optim.AdamW(ps)),
    "adamw": (
        {"name": "adamw", "learning_rate": 0.05, "beta1": 0.8, "weight_decay": 0.5},
        lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.999), weight_decay=0.5),
    ),
}


@pytest.mark.parametrize("spec, make_torch", WEIGHT_DECAY.values(), ids=WEIGHT_DECAY.keys())
def test_weight_decay_and_adamw_steps_match_torch(spec, make_torch):
    rng = np.random.default_rng(1)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt, topt = optimizers.get(dict(spec)), make_torch(list(tparams.values()))
    for _ in range(6):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(params, grads)
        for k, tp in tparams.items():
            tp.grad = torch.from_numpy(grads[k].copy())
        topt.step()
    for k, p in params.items():
        np.testing.assert_allclose(p, tparams[k].detach().numpy(), rtol=1e-11, atol=1e-13)


def summary(cost):
    return EpochSummary(1, cost, None, None, None, None)


SCHEDULES = {
    "step": (
        {"name": "step", "step_size": 3, "gamma": 0.5},
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    ),
    "cosine": (
        {"name": "cosine"},
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    ),
    "cosine-warmup": (
        {"name": "cosine", "warmup_epochs": 3},
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LambdaLR(o, lambda e: (e + 1) / 4),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
            ],
            milestones=[3],
        ),
    ),
    "plateau": (
        {"name": "plateau", "patience": 1, "factor": 0.5},
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.5),
    ),
}
COSTS = [1.0, 0.8, 0.8, 0.79995, 0.9, 0.7, 0.71, 0.72, 0.73, 0.6]


@pytest.mark.parametrize("spec, make_torch", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedules_match_torch(spec, make_torch):
    """Ten epochs: each epoch's rate, as torch's scheduler stepped once per epoch gives it."""
    param = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([param], lr=0.1)
    tsched = make_torch(topt)
    ours = schedules.get(dict(spec), 0.1, 10)
    for epoch, cost in enumerate(COSTS, start=1):
        assert ours.rate(epoch) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12), epoch
        ours.epoch_ended(summary(cost))
        topt.step()
        tsched.step(cost) if spec["name"] == "plateau" else tsched.step()


def test_the_convnet_recipe_follows_torchs_trajectory_given_the_same_draws():
    """The whole recommended recipe through ``fit`` (the convnet preset: batch norm and
    dropout; AdamW, a cosine schedule, shift and rotation), against PyTorch fed the same
    batches, augmented images and dropout masks: the same weights and running statistics after
    two epochs. What then separates the two frameworks' accuracies in
    benchmarks/convnet_accuracy.py is the random draws (and ghost batches with threads), not
    the math."""
    sample = load_mnist_sample()  # 96 digits at 14x14, so that float64 stays quick
    X = (sample.X[:96, :, ::2, ::2] * sample.preprocessing["scale"]).astype(np.float64)
    y = sample.y[:96]
    recipe = {
        "batch_size": 32,
        "optimizer": {"name": "adamw", "learning_rate": 1e-3},
        "lr_schedule": {"name": "cosine"},
        "augmentation": {"shift": 2, "rotate": 10},
    }
    net = Network.from_config(build_preset("convnet", (1, 14, 14), 10), seed=4, dtype="float64")
    model, pairs = torch_twin(net)
    net.fit(X, y, epochs=2, seed=5, threads=1, **recipe)

    masks = [m for m in model if isinstance(m, FixedMask)]
    dropouts = [layer for layer in net.layers if layer.type == "dropout"]
    topt = torch.optim.AdamW([tp for _, tp in pairs], lr=1e-3)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=2)
    augment = Augmentation.from_spec(recipe["augmentation"])
    order_rng, iteration = np.random.default_rng(5), 0
    for _ in range(2):
        model.train()
        for idx in np.array_split(order_rng.permutation(len(y)), [32, 64]):
            iteration += 1
            noise = StepNoise(5, iteration, 0, len(idx))
            for mask, layer in zip(masks, dropouts, strict=True):
                m = F.dropout_mask(
                    noise.rng(layer.plan.index + 1),
                    layer.plan.rate,
                    layer.plan.input_shape,
                    noise.rows,
                    net.dtype,
                )
                mask.mask = torch.from_numpy(np.ascontiguousarray(np.moveaxis(m, -1, 0)))
            xb = torch.from_numpy(augment.apply(X[idx], noise))
            topt.zero_grad()
            nn.functional.cross_entropy(model(xb), torch.from_numpy(y[idx])).backward()
            topt.step()
        tsched.step()
    # Such a bias agrees only roughly, and the running mean that holds it within the bias's
    # own difference.
    bns = [layer.plan.index for layer in net.layers if layer.type == "batchnorm"]
    invariant = biases_before_batchnorm(net)
    drift = {}
    for name, tp in pairs:
        drift[name] = float(np.abs(net.params[name] - tp.detach().numpy()).max())
        atol = 1e-4 if name in invariant else 1e-10
        np.testing.assert_allclose(
            net.params[name], tp.detach().numpy(), rtol=1e-7, atol=atol, err_msg=name
        )
    for index, bn in zip(bns, batchnorms(model), strict=True):
        for stat in ("running_mean", "running_var"):
            atol = drift[f"{index - 1}.b"] + 1e-10 if stat == "running_mean" else 0
            np.testing.assert_allclose(
                net.buffers[f"{index}.{stat}"],
                getattr(bn, stat),
                rtol=1e-7,
                atol=atol,
                err_msg=stat,
            )
