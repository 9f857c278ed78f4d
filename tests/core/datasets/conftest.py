"""Fixtures the dataset reader tests share: a seeded generator, real digits, files to read."""

import numpy as np
import pytest

from tests.support import builders


@pytest.fixture(scope="module")
def holdout():
    return builders.holdout()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def idx_pair(rng):
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    y = np.arange(12) % 10
    return images, y, builders.idx_bytes(images), builders.idx_bytes(y)


@pytest.fixture
def png():
    return builders.png_bytes(np.zeros((4, 4), np.uint8))
