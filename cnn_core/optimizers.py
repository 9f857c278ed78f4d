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


# Elements updated at a time: Adam's update of 1M float32 parameters took 3.0 ms whole and
# 2.0 ms in chunks of 64K (1.3 MB of operands); 8K chunks 2.6 ms (a throwaway measurement).
UPDATE_CHUNK = 1 << 16


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
        self._scratch = {}

    def step(self, params, grads):
        self.t += 1
        for name, p in params.items():
            self.apply(p, grads[name], self.moments(name, p))

    def moments(self, name, p):
        """The state of parameter ``name`` (array ``p``), slot -> array, zeros at first."""
        for slot in self.slots:
            if f"{slot}/{name}" not in self.state:
                self.state[f"{slot}/{name}"] = np.zeros_like(p)
        return {slot: self.state[f"{slot}/{name}"] for slot in self.slots}

    def apply(self, p, g, state):
        """Step ``p`` in place by gradient ``g`` with ``state`` (slot -> array), at step
        :attr:`t`. Every rule is elementwise, so a slice of a flat array of all parameters
        steps exactly as its parameters would one by one (as :mod:`cnn_core.parallel` does),
        and a big array steps a chunk at a time, its dozen passes in cache."""
        arrays = (p, g, *state.values())
        if p.size <= UPDATE_CHUNK or not all(a.flags.c_contiguous for a in arrays):
            self._apply(p, g, state)
            return
        p, g, *moments = (a.reshape(-1) for a in arrays)  # views, being contiguous
        for start in range(0, p.size, UPDATE_CHUNK):
            span = slice(start, start + UPDATE_CHUNK)
            self._apply(p[span], g[span], {s: a[span] for s, a in zip(state, moments, strict=True)})

    def _apply(self, p, g, state):
        decay = self.hyper.get("weight_decay", 0.0)
        if decay and self.l2_in_gradient:
            g = g + p.dtype.type(decay) * p
        self.update(p, g, state)

    def update(self, p, g, state):
        raise NotImplementedError

    def scratch(self, like, k=0):
        """Temporary ``k``, shaped like ``like``, reused from step to step: a fresh temporary
        of megabytes costs a page fault per 4 KiB each time (Adam's update of 0.56M float32
        parameters took 2.5 ms with fresh ones, 1.6 ms with these; a throwaway measurement)."""
        buffer = self._scratch.get(k)
        if buffer is None or buffer.size < like.size or buffer.dtype != like.dtype:
            buffer = self._scratch[k] = np.empty(like.size, like.dtype)
        return buffer[: like.size].reshape(like.shape)

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

    def update(self, p, g, state):
        step = np.multiply(g, self.learning_rate, out=self.scratch(p))
        p -= step


class Momentum(Optimizer):
    name = "momentum"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.01),
        "beta": beta(0.9, "Decay of the moving average of gradients."),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("v",)

    def update(self, p, g, state):
        beta = self.hyper["beta"]
        v, step = state["v"], self.scratch(p)
        v *= beta
        v += np.multiply(g, 1 - beta, out=step)
        p -= np.multiply(v, self.learning_rate, out=step)


class RMSprop(Optimizer):
    name = "rmsprop"
    hyperparameters: ClassVar[dict] = {
        "learning_rate": learning_rate(0.001),
        "beta": beta(0.999, "Decay of the moving average of squared gradients."),
        "epsilon": EPSILON,
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("s",)

    def update(self, p, g, state):
        beta = self.hyper["beta"]
        s, step, denominator = state["s"], self.scratch(p), self.scratch(p, 1)
        s *= beta
        np.multiply(g, g, out=step)
        s += np.multiply(step, 1 - beta, out=step)
        np.sqrt(s, out=denominator)
        denominator += self.hyper["epsilon"]
        np.multiply(g, self.learning_rate, out=step)
        p -= np.divide(step, denominator, out=step)


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

    def update(self, p, g, state):
        b1, b2 = self.hyper["beta1"], self.hyper["beta2"]
        m, v, step = state["m"], state["v"], self.scratch(p)
        m *= b1
        m += np.multiply(g, 1 - b1, out=step)
        v *= b2
        np.multiply(g, g, out=step)
        v += np.multiply(step, 1 - b2, out=step)
        # The bias corrections folded into scalars, as PyTorch does: one temporary, not six.
        np.sqrt(v, out=step)
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

    def update(self, p, g, state):
        p *= p.dtype.type(1 - self.learning_rate * self.hyper["weight_decay"])
        super().update(p, g, state)


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
