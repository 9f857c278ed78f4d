"""The label and class-name checks every reader shares (checks.py), driven through load_npz."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_core.datasets import (
    load_npz,
)
from tests.support.builders import npz_bytes
from tests.support.datasets import assert_refused


@pytest.mark.parametrize(
    ("y", "extra", "match"),
    [
        ([0, -1, 1], {}, "negative label -1"),
        ([0, 1, 2], {"class_names": np.array(["a", "b"])}, "label 2 but there are only 2"),
        ([0, 1, 10**9], {}, "over the limit"),
        ([4, 4, 4], {}, "single class"),
        ([0, 1], {}, "3 samples but y has shape"),
        ([0.0, 1.5, 1.0], {}, "non-integer label 1.5"),
        ([[1, 0], [0, 1], [1, 0]], {}, "one-hot"),
        ([0, 1, 1], {"class_names": np.array(["a", "a"])}, "unique"),
        ([0, 1, 1], {"class_names": np.array(["a", " "])}, "printable"),
    ],
    ids=[
        "negative",
        "beyond-names",
        "huge",
        "single-class",
        "length",
        "fraction",
        "one-hot",
        "duplicate-names",
        "blank-name",
    ],
)
def test_npz_bad_labels_are_refused(y, extra, match):
    X = np.zeros((3, 4, 4), np.uint8)
    assert_refused(match, load_npz, npz_bytes(X=X, y=np.asarray(y), **extra))


def test_npz_class_names_must_be_a_list_of_short_strings():
    X, y = np.zeros((2, 4, 4), np.uint8), np.array([0, 1])
    for names, match in [
        (np.array(["a"]), "1 class names"),
        (np.array([["a", "b"]]), r"shape \(1, 2\)"),
        (np.array([1, 2]), "save it as"),
        (np.array(["a", "b" * 300]), "up to 300 characters"),
    ]:
        assert_refused(match, load_npz, npz_bytes(X=X, y=y, class_names=names))
