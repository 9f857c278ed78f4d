"""Winograd F(2x2, 3x3): the 3x3 stride-1 convolutions of wide layers. The shared gradient
checks run on few channels, where im2col is used, so these force Winograd on small layers and
check it against finite differences, against im2col and against PyTorch."""

import numpy as np
import pytest

from cnn_core import functional as F

from ..support.conv_paths import assert_all_close, assert_conv_matches_torch, two_ways
from .test_gradients import functional_check

CASES = {
    "same-even": ((8, 6), (1, 1, 1, 1)),
    "valid-odd": ((7, 5), (0, 0, 0, 0)),
    "asymmetric": ((5, 6), (0, 1, 2, 0)),
    "pad2": ((4, 4), (2, 2, 2, 2)),
    "one-tile": ((3, 3), (0, 0, 0, 0)),
}


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Winograd for every 3x3 stride-1 conv, in blocks of one tile row (several per map)."""
    monkeypatch.setattr(F, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(F, "WINOGRAD_MIN_BATCH", 1)
    monkeypatch.setattr(F, "WINOGRAD_BLOCK_BYTES", 1)


def im2col_and_winograd(monkeypatch, x, w, b, padding):
    """(out, dx, dw, db) by im2col, then by Winograd (see :func:`two_ways`)."""
    monkeypatch.setattr(F, "WINOGRAD_MIN_BATCH", 1)
    monkeypatch.setattr(F, "WINDOW_ROWS_MIN_DEPTH", 10**9)
    setting, values = "WINOGRAD_MIN_CHANNELS", (10**9, 1)
    return two_ways(monkeypatch, setting, values, F.WinogradCache, x, w, b, padding)


@pytest.mark.parametrize("size, padding", CASES.values(), ids=CASES.keys())
def test_winograd_gradients(winograd_everywhere, size, padding):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, *size, 2))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    functional_check(
        lambda x, w, b: F.conv_forward(x, w, b, (1, 1), padding), F.conv_backward, (x, w, b)
    )


@pytest.mark.parametrize("size, padding", CASES.values(), ids=CASES.keys())
def test_winograd_equals_im2col_in_float64(monkeypatch, size, padding):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, *size, 3)), rng.standard_normal((5, 4, 3, 3)), np.ones(5)
    monkeypatch.setattr(F, "WINOGRAD_BLOCK_BYTES", 1)
    im2col, winograd = im2col_and_winograd(monkeypatch, x, w, b, padding)
    assert_all_close(winograd, im2col, 1e-12)


def test_wide_layer_uses_winograd_within_float32_rounding(monkeypatch):
    """A vgg64-sized layer (128 -> 128 channels) on a batch of 16: Winograd by default, float32
    kept end to end, and as close to im2col as float32 rounding allows."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((128, 8, 8, 16), dtype=np.float32)
    w = rng.standard_normal((128, 128, 3, 3), dtype=np.float32) * np.float32(0.05)
    b = np.zeros(128, np.float32)
    assert isinstance(F.conv_forward(x, w, b, (1, 1), (1,) * 4)[1], F.WinogradCache)
    im2col, winograd = im2col_and_winograd(monkeypatch, x, w, b, (1,) * 4)
    for ours, reference in zip(winograd, im2col, strict=True):
        assert ours.dtype == np.float32
        scale = np.abs(reference).max()
        assert np.abs(ours - reference).max() <= 1e-5 * scale


def test_narrow_strided_other_kernels_or_small_batches_skip_winograd():
    rng = np.random.default_rng(7)
    c, n = F.WINOGRAD_MIN_CHANNELS, F.WINOGRAD_MIN_BATCH
    for w_shape, stride, batch in (
        ((8, c, 3, 3), (2, 2), n),
        ((8, c, 5, 5), (1, 1), n),
        ((8, c - 1, 3, 3), (1, 1), n),
        ((8, c, 3, 3), (1, 1), n - 1),
    ):
        x = rng.standard_normal((w_shape[1], 6, 6, batch))
        _, cache = F.conv_forward(x, rng.standard_normal(w_shape), np.zeros(8), stride, (1,) * 4)
        assert not isinstance(cache, F.WinogradCache)


def test_winograd_matches_torch(winograd_everywhere):
    assert isinstance(assert_conv_matches_torch((3, 3)), F.WinogradCache)
