import math

import pytest

from cnn_core.errors import ConfigError
from cnn_core.specs import Hyper, check_fields


def test_check_fields_returns_an_object_of_known_fields():
    spec = {"shift": 2}
    assert check_fields(spec, "augmentation", ("shift", "rotate")) is spec


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (3, r"^augmentation must be an object like \{'shift': 2\}, got 3$"),
        ([("shift", 2)], r"^augmentation must be an object like"),
        (
            {"zoom": 2, "skew": 1},
            r"^augmentation: unknown field\(s\) \['skew', 'zoom'\] \(allowed: shift, rotate\)$",
        ),
        ({"rotate": 1}, r"^augmentation: missing field\(s\) \['shift'\], e\.g\. \{'shift': 2\}$"),
    ],
    ids=["number", "list", "unknown", "missing"],
)
def test_check_fields_says_what_is_wrong(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        check_fields(
            spec, "augmentation", ("shift", "rotate"), example={"shift": 2}, required=("shift",)
        )


def test_check_fields_without_allowed_fields_says_none():
    with pytest.raises(ConfigError, match=r"\(allowed: none\)"):
        check_fields({"x": 1}, "layer 0 (flatten)", ())


@pytest.mark.parametrize(
    "hyper, value, problem",
    [
        (Hyper(1, 0, 10, low_open=True), 0, "must be in (0, 10]"),
        (Hyper(1, 0, 10, high_open=True), 10, "must be in [0, 10)"),
        (Hyper(1, 0, 10), math.nan, "must be a finite number"),
        (Hyper(1, 0, 10), True, "must be a finite number"),
        (Hyper(1, 0, 10, integer=True), 1.5, "must be an integer"),
        (Hyper(1, 0, 10, integer=True), 10, None),
        (Hyper(1, 0, 10, low_open=True), 1e-9, None),
    ],
)
def test_hyper_problem(hyper, value, problem):
    assert hyper.problem(value) == problem
