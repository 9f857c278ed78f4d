"""Learning-rate schedules, stepped once per epoch, with PyTorch's meanings.

A schedule gives the learning rate of each epoch from the optimizer's ``learning_rate`` (the
base rate, lr0) before the epoch starts, and sees each epoch's summary when it ends:

- ``{"name": "step", "step_size": 5, "gamma": 0.1}``: lr0 * gamma ** ((epoch - 1) // step_size)
  (``StepLR``);
- ``{"name": "cosine", "warmup_epochs": 0}``: ``warmup_epochs`` epochs rising linearly,
  lr0 * e / (warmup_epochs + 1) for e = 1..warmup_epochs, then a half cosine from lr0 towards 0
  over the remaining epochs, lr0 * (1 + cos(pi * k / K)) / 2 for k = 0..K-1 (``LinearLR`` then
  ``CosineAnnealingLR`` with T_max = K, stepped per epoch);
- ``{"name": "plateau", "patience": 2, "factor": 0.5}``: the rate times ``factor`` once the
  validation cost (the training cost without validation data) has not improved on its best by
  a relative 1e-4 for more than ``patience`` epochs (``ReduceLROnPlateau``'s defaults).

``state()`` / ``load_state()`` carry what a checkpoint needs to continue exactly.
"""

import math
from typing import ClassVar

from .errors import ConfigError
from .specs import Hyper, read_settings

PLATEAU_THRESHOLD = 1e-4  # PyTorch's default relative improvement


class Schedule:
    """Base of the schedules: each declares its ``settings`` (name -> :class:`Hyper`), from
    which the API's schema is derived."""

    name: ClassVar[str] = ""
    settings: ClassVar[dict] = {}

    def __init__(self, base_rate, epochs, **settings):
        self.base_rate, self.epochs = base_rate, epochs
        values = read_settings(settings, f"lr_schedule {self.name}", self.settings)
        for key, value in values.items():
            setattr(self, key, value)

    def spec(self):
        return {"name": self.name, **{key: getattr(self, key) for key in self.settings}}

    def rate(self, epoch):
        """The learning rate of ``epoch`` (counting from 1)."""
        raise NotImplementedError

    def epoch_ended(self, summary):
        """Called with each epoch's summary, before the next epoch's :meth:`rate`."""

    def state(self):
        return {}

    def load_state(self, state):
        pass


def _epochs(default, low, description):
    return Hyper(default, low, 10_000, description=description, integer=True)


def _factor(default, description):
    return Hyper(default, 0, 1, low_open=True, high_open=True, description=description)


class Step(Schedule):
    name = "step"
    settings: ClassVar[dict] = {
        "step_size": _epochs(5, 1, "Epochs between two reductions."),
        "gamma": _factor(0.1, "Factor of each reduction."),
    }

    def rate(self, epoch):
        return self.base_rate * self.gamma ** ((epoch - 1) // self.step_size)


class Cosine(Schedule):
    name = "cosine"
    settings: ClassVar[dict] = {
        "warmup_epochs": _epochs(0, 0, "Epochs of linear warm-up before the cosine."),
    }

    def __init__(self, base_rate, epochs, **settings):
        super().__init__(base_rate, epochs, **settings)
        if self.warmup_epochs >= epochs:
            raise ConfigError(
                f"lr_schedule cosine: warmup_epochs ({self.warmup_epochs}) must be fewer than "
                f"the epochs ({epochs})"
            )

    def rate(self, epoch):
        if epoch <= self.warmup_epochs:
            return self.base_rate * epoch / (self.warmup_epochs + 1)
        k, total = epoch - 1 - self.warmup_epochs, self.epochs - self.warmup_epochs
        return self.base_rate * (1 + math.cos(math.pi * k / total)) / 2


class Plateau(Schedule):
    name = "plateau"
    settings: ClassVar[dict] = {
        "patience": _epochs(2, 0, "Epochs without improvement that are tolerated."),
        "factor": _factor(0.5, "Factor of each reduction."),
    }

    def __init__(self, base_rate, epochs, **settings):
        super().__init__(base_rate, epochs, **settings)
        self.best, self.bad_epochs, self.current = math.inf, 0, base_rate

    def rate(self, epoch):
        return self.current

    def epoch_ended(self, summary):
        value = summary.val_cost if summary.val_cost is not None else summary.cost
        if value < self.best * (1 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.current *= self.factor
            self.bad_epochs = 0

    def state(self):
        best = self.best if math.isfinite(self.best) else None
        return {"best": best, "bad_epochs": self.bad_epochs, "current": self.current}

    def load_state(self, state):
        self.best = math.inf if state["best"] is None else state["best"]
        self.bad_epochs, self.current = state["bad_epochs"], state["current"]


class Constant(Schedule):
    """No schedule: the optimizer's learning rate throughout."""

    name = "constant"

    def rate(self, epoch):
        return self.base_rate


SCHEDULES = {cls.name: cls for cls in (Step, Cosine, Plateau)}


def get(spec, base_rate, epochs):
    """The schedule of ``spec`` (None, a name, or ``{"name": ..., **settings}``)."""
    if spec is None:
        return Constant(base_rate, epochs)
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or spec.get("name") not in SCHEDULES:
        raise ConfigError(
            f"lr_schedule must be {{'name': one of {', '.join(SCHEDULES)}, ...}}, got {spec!r}"
        )
    settings = dict(spec)
    return SCHEDULES[settings.pop("name")](base_rate, epochs, **settings)
