import math

import pytest

from cnn_core.errors import ConfigError
from cnn_core.specs import Flag, Hyper, check_fields, read_settings


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


@pytest.mark.parametrize(
    ("value", "problem"),
    [(True, None), (False, None), (1, "must be true or false"), ("yes", "must be true or false")],
)
def test_flag_problem(value, problem):
    assert Flag(False).problem(value) == problem


DECLARED = {"patience": Hyper(3, 1, 1000, integer=True), "restore_best": Flag(True)}


def test_read_settings_fills_in_the_declared_defaults():
    assert read_settings({}, "early_stopping", DECLARED) == {"patience": 3, "restore_best": True}
    spec = {"restore_best": False, "patience": 7}
    assert read_settings(spec, "early_stopping", DECLARED) == {"patience": 7, "restore_best": False}


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"patience": 0}, r"^early_stopping: patience must be in \[1, 1000\], got 0$"),
        (
            {"patience": 2, "restore_best": "no"},
            r"^early_stopping: restore_best must be true or false, got 'no'$",
        ),
        ({"mode": "max"}, r"^early_stopping: unknown field\(s\) \['mode'\]"),
        ({"restore_best": True}, r"^early_stopping: missing field\(s\) \['patience'\]"),
    ],
    ids=["bound", "flag", "unknown", "missing"],
)
def test_read_settings_says_what_is_wrong(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        read_settings(spec, "early_stopping", DECLARED, required=("patience",))
