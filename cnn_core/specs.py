"""Settings given as JSON-like objects: the one check of their fields, and numeric bounds.

Training settings (``optimizer``, ``lr_schedule``, ``augmentation``, ``early_stopping``) and
layer entries are objects with known fields. :func:`check_fields` refuses anything else with
one message style, ``augmentation: unknown field(s) ['zoom'] (allowed: shift, rotate, flip)``;
:class:`Hyper` declares a number's default and interval once, :class:`Flag` a true/false
setting's default, for the check (:func:`read_settings`) and for the API's schema.
"""

import math
from dataclasses import dataclass

from .errors import ConfigError


def check_fields(spec, what, allowed, *, example=None, required=()):
    """Return ``spec`` once it is a dict whose keys are all in ``allowed`` (in the order the
    message lists them) and include every ``required`` one; ``example`` shows the expected
    shape when ``spec`` is no dict at all."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{what} must be an object like {example}, got {spec!r}")
    unknown = set(spec) - set(allowed)
    if unknown:
        raise ConfigError(
            f"{what}: unknown field(s) {sorted(unknown)} (allowed: {', '.join(allowed) or 'none'})"
        )
    missing = [key for key in required if key not in spec]
    if missing:
        raise ConfigError(f"{what}: missing field(s) {missing}, e.g. {example}")
    return spec


def read_settings(spec, what, declared, *, example=None, required=()):
    """The value of each ``declared`` setting (name -> :class:`Hyper` or :class:`Flag`) in
    ``spec``, its default where absent, once :func:`check_fields` passes and every value is
    acceptable."""
    check_fields(spec, what, declared, example=example, required=required)
    values = {key: spec.get(key, setting.default) for key, setting in declared.items()}
    for key, value in values.items():
        problem = declared[key].problem(value)
        if problem:
            raise ConfigError(f"{what}: {key} {problem}, got {value!r}")
    return values


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its default and the interval it must lie in (``low_open`` /
    ``high_open``: the bound itself is excluded; ``integer``: whole numbers only). The API's
    schemas of optimizers, learning-rate schedules, augmentation and early stopping are
    derived from these."""

    default: float
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    description: str = ""
    integer: bool = False

    def interval(self):
        return (
            f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            f"{')' if self.high_open else ']'}"
        )

    def problem(self, value):
        """None for an acceptable value, else what is wrong with it."""
        kinds = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return f"must be {'an integer' if self.integer else 'a finite number'}"
        if not self.contains(value):
            return f"must be in {self.interval()}"
        return None

    def contains(self, value):
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


@dataclass(frozen=True)
class Flag:
    """A true/false setting and its default (JSON's true and false only, not 0 or 1)."""

    default: bool
    description: str = ""

    def problem(self, value):
        """None for true or false, else what is wrong."""
        return None if isinstance(value, bool) else "must be true or false"
