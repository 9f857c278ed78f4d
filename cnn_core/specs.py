"""Settings given as JSON-like objects: the one check of their fields, and numeric bounds.

Training settings (``optimizer``, ``lr_schedule``, ``augmentation``, ``early_stopping``) and
layer entries are objects with known fields. :func:`check_fields` refuses anything else with
one message style, ``augmentation: unknown field(s) ['zoom'] (allowed: shift, rotate, flip)``;
:class:`Hyper` declares a number's default and interval once, for the check and for the API's
schema.
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


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its default and the interval it must lie in (``low_open`` /
    ``high_open``: the bound itself is excluded; ``integer``: whole numbers only). The API's
    optimizer and learning-rate schedule schemas are derived from these."""

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
