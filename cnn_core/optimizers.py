"""Gradient-descent optimizers with the seed notebook's hyperparameters.

Every optimizer has one interface: ``step(params, grads)`` updates the arrays of ``params`` in
place; ``state_dict()`` / ``load_state_dict()`` save and restore the step count and the moment
arrays (keyed ``"{slot}/{param name}"``), so a checkpoint resumes training exactly. The
bookkeeping lives in :class:`Optimizer`; each subclass writes only its update rule.

Update rules, for a parameter p with gradient g at step t (t counts from 1). ``weight_decay``
(wd, default 0) adds the L2 penalty's gradient first, ``g += wd * p``, as PyTorch's optimizers
do, except ``adamw``, which decays the weights apart from the gradient (PyTorch's ``AdamW``).
``lr`` is :attr:`Optimizer.learning_rate`, the ``learning_rate`` setting unless a schedule
(:mod:`cnn_core.schedules`) changes it between epochs.

- ``sgd``:      p -= lr * g
- ``momentum``: v = beta * v + (1 - beta) * g;  p -= lr * v            (the seed's form)
- ``rmsprop``:  s = beta * s + (1 - beta) * g^2;  p -= lr * g / (sqrt(s) + epsilon)
- ``adam``:     m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2;
                p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + epsilon)
- ``adamw``:    p -= lr * wd * p, then the ``adam`` step on the plain gradient
"""

import math
from typing import ClassVar

import numpy as np

from .errors import ConfigError
from .specs import Hyper, read_settings


def learning_rate(default):
    return Hyper(default, 0, 10, low_open=True, description="Step size.")


def beta(default, description):
    return Hyper(default, 0, 1, high_open=True, description=description)


EPSILON = Hyper(1e-8, 0, 1, low_open=True, description="Added to the denominator for stability.")
WEIGHT_DECAY = Hyper(0.0, 0, 1, description="L2 penalty: weight_decay * p added to the gradient.")


class Optimizer:
    """Bookkeeping shared by all optimizers: hyperparameters, step count and state slots.

    A subclass declares ``name``, ``hyperparameters`` (name -> :class:`Hyper`), the ``slots``
    of its per-parameter state, and ``update``.
    """

    name: ClassVar[str] = ""
    hyperparameters: ClassVar[dict] = {}
    slots: ClassVar[tuple] = ()
    l2_in_gradient: ClassVar[bool] = True  # weight_decay as an L2 term of the gradient

    def __init__(self, **hyper):
        self.hyper = read_settings(hyper, f"optimizer {self.name}", self.hyperparameters)
        self.t = 0
        self.state = {}
        self.learning_rate = self.hyper["learning_rate"]

    def step(self, params, grads):
        self.t += 1
        decay = self.hyper.get("weight_decay", 0.0)
        for name, p in params.items():
            for slot in self.slots:
                if f"{slot}/{name}" not in self.state:
                    self.state[f"{slot}/{name}"] = np.zeros_like(p)
            g = grads[name]
            if decay and self.l2_in_gradient:
                g = g + p.dtype.type(decay) * p
            self.update(name, p, g)

    def update(self, name, p, g):
        raise NotImplementedError

    def state_dict(self):
        return {
            "name": self.name,
            "hyper": dict(self.hyper),
            "t": self.t,
            "arrays": dict(self.state),
        }

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.state = {key: np.array(value) for key, value in state["arrays"].items()}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.hyper.items())})"


class SGD(Optimizer):
    name = "sgd"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.01),
        "weight_decay": WEIGHT_DECAY,
    }

    def update(self, name, p, g):
        p -= self.learning_rate * g


class Momentum(Optimizer):
    name = "momentum"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.01),
        "beta": beta(0.9, "Decay of the moving average of gradients."),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("v",)

    def update(self, name, p, g):
        beta = self.hyper["beta"]
        v = self.state[f"v/{name}"]
        v *= beta
        v += (1 - beta) * g
        p -= self.learning_rate * v


class RMSprop(Optimizer):
    name = "rmsprop"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.001),
        "beta": beta(0.999, "Decay of the moving average of squared gradients."),
        "epsilon": EPSILON,
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("s",)

    def update(self, name, p, g):
        beta = self.hyper["beta"]
        s = self.state[f"s/{name}"]
        s *= beta
        s += (1 - beta) * (g * g)
        p -= self.learning_rate * g / (np.sqrt(s) + self.hyper["epsilon"])


class Adam(Optimizer):
    name = "adam"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.001),
        "beta1": beta(0.9, "Decay of the first moment (mean of gradients)."),
        "beta2": beta(0.999, "Decay of the second moment (mean of squared gradients)."),
        "epsilon": EPSILON,
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("m", "v")

    def update(self, name, p, g):
        b1, b2 = self.hyper["beta1"], self.hyper["beta2"]
        m, v = self.state[f"m/{name}"], self.state[f"v/{name}"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        # The bias corrections folded into scalars, as PyTorch does: one temporary, not six.
        step = np.sqrt(v)
        step /= math.sqrt(1 - b2**self.t)
        step += self.hyper["epsilon"]
        np.divide(m, step, out=step)
        step *= self.learning_rate / (1 - b1**self.t)
        p -= step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): the weights shrink by
    ``lr * weight_decay`` before each step instead of the decay entering the moments."""

    name = "adamw"
    hyperparameters: ClassVar[dict] = {
        **Adam.hyperparameters,
        "weight_decay": Hyper(
            0.01, 0, 1, description="Decoupled decay: p shrinks by lr * weight_decay per step."
        ),
    }
    l2_in_gradient = False

    def update(self, name, p, g):
        p *= p.dtype.type(1 - self.learning_rate * self.hyper["weight_decay"])
        super().update(name, p, g)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, RMSprop, Adam, AdamW)}


def get(spec):
    """Build an optimizer from a name or a dict ``{"name": ..., **hyperparameters}``."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"optimizer must be a name or {{'name': ..., ...}}, got {spec!r}")
    hyper = dict(spec)
    name = hyper.pop("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r} (expected one of {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](**hyper)
