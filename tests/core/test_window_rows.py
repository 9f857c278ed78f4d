"""Window-row products: the stride-1 convolutions of layers with deep kernel columns (kh * C).
The shared gradient checks run on small batches and few channels, where im2col is used, so
these force window rows on small layers (with the smallest buffer, so that it wraps)
and check them against finite differences, against im2col and against PyTorch."""

import numpy as np
import pytest

from cnn_core import functional as F

from ..support.conv_paths import assert_all_close, assert_conv_matches_torch, two_ways
from .test_gradients import functional_check

CASES = {
    "k3-same": ((3, 3), (6, 5), (1, 1, 1, 1)),
    "k3-valid": ((3, 3), (6, 5), (0, 0, 0, 0)),
    "k2-same-even": ((2, 2), (5, 4), (0, 1, 0, 1)),
    "k3x2-asymmetric": ((3, 2), (4, 6), (2, 0, 1, 0)),
    "k1": ((1, 1), (3, 4), (0, 0, 0, 0)),
    "k5-pad3": ((5, 5), (4, 4), (3, 3, 3, 3)),  # padding beyond kernel - 1: dout cropped
    "k4-valid-small": ((4, 4), (5, 5), (0, 0, 0, 0)),  # dx by offsets, not correlation
}


@pytest.fixture
def window_rows_everywhere(monkeypatch):
    """Window rows for every stride-1 conv, in the smallest buffer (kh slots, so the rows move
    to its front every kh output rows)."""
    monkeypatch.setattr(F, "WINDOW_ROWS_MIN_DEPTH", 1)
    monkeypatch.setattr(F, "WINDOW_ROWS_MIN_BATCH", 1)
    monkeypatch.setattr(F, "WINDOW_ROWS_BUFFER_BYTES", 1)


def im2col_and_window_rows(monkeypatch, x, w, b, padding, need_dx=True):
    """(out, dx, dw, db) by im2col, then by window rows (see :func:`two_ways`)."""
    monkeypatch.setattr(F, "WINOGRAD_MIN_CHANNELS", 10**9)
    setting, values = "WINDOW_ROWS_MIN_DEPTH", (10**9, 1)
    return two_ways(monkeypatch, setting, values, F.WindowRowsCache, x, w, b, padding, need_dx)


@pytest.mark.parametrize("kernel, size, padding", CASES.values(), ids=CASES.keys())
def test_window_rows_gradients(window_rows_everywhere, kernel, size, padding):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, *size, 2))
    w = rng.standard_normal((2, 3, *kernel))
    b = rng.standard_normal(2)
    assert isinstance(F.conv_forward(x, w, b, (1, 1), padding)[1], F.WindowRowsCache)
    functional_check(
        lambda x, w, b: F.conv_forward(x, w, b, (1, 1), padding), F.conv_backward, (x, w, b)
    )


@pytest.mark.parametrize("kernel, size, padding", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("buffer_bytes", [1, 10**9])
def test_window_rows_equal_im2col_in_float64(monkeypatch, kernel, size, padding, buffer_bytes):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, *size, 3)), rng.standard_normal((5, 4, *kernel)), np.ones(5)
    monkeypatch.setattr(F, "WINDOW_ROWS_MIN_BATCH", 1)
    monkeypatch.setattr(F, "WINDOW_ROWS_BUFFER_BYTES", buffer_bytes)
    for need_dx in (True, False):
        im2col, window_rows = im2col_and_window_rows(monkeypatch, x, w, b, padding, need_dx)
        assert_all_close(window_rows, im2col, 1e-12)


def test_random_shapes_equal_im2col_in_float64(monkeypatch):
    """Random channels, kernels, maps and pads, with the default buffer and thresholds."""
    rng = np.random.default_rng(9)
    for _ in range(20):
        c, f = (int(v) for v in rng.integers(16, 40, 2))
        kh, kw = (int(v) for v in rng.integers(2, 5, 2))
        h, width = int(rng.integers(kh, 12)), int(rng.integers(kw, 12))
        padding = tuple(int(p) for p in rng.integers(0, 4, 4))
        x = rng.standard_normal((c, h, width, 16))
        w, b = rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
        im2col, window_rows = im2col_and_window_rows(monkeypatch, x, w, b, padding)
        assert_all_close(window_rows, im2col, 1e-11)


def test_one_workspace_serves_paddings_of_equal_width(window_rows_everywhere):
    """The row buffer is keyed by shape: a padding of the same padded width but other sides
    finds the last one's values in its padding columns unless it zeroes them."""
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((3, 5, 5, 2)), rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    ws = F.Workspace()
    for padding in ((1, 1, 0, 2), (1, 1, 2, 0), (1, 1, 1, 1)):
        out = F.conv_forward(x, w, b, (1, 1), padding, ws)[0]
        expected = F.conv_forward(x, w, b, (1, 1), padding)[0]
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_wide_layer_uses_window_rows_within_float32_rounding(monkeypatch):
    """vgg32's 32 -> 32 layer at batch 64: window rows by default, float32 kept end to end."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((32, 12, 12, 64), dtype=np.float32)
    w = rng.standard_normal((32, 32, 3, 3), dtype=np.float32) * np.float32(0.05)
    b = np.zeros(32, np.float32)
    assert isinstance(F.conv_forward(x, w, b, (1, 1), (1,) * 4)[1], F.WindowRowsCache)
    im2col, window_rows = im2col_and_window_rows(monkeypatch, x, w, b, (1,) * 4)
    for ours, reference in zip(window_rows, im2col, strict=True):
        assert ours.dtype == np.float32
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


def test_shallow_kernel_columns_small_batches_and_strides_keep_im2col():
    rng = np.random.default_rng(7)
    wide = rng.standard_normal((16, 8, 8, 64))
    for x, w, stride, window_rows in (
        (wide, rng.standard_normal((8, 16, 3, 3)), (2, 2), False),
        (wide[:, :, :, :15], rng.standard_normal((8, 16, 3, 3)), (1, 1), False),
        (wide[:15], rng.standard_normal((8, 15, 3, 3)), (1, 1), False),  # kh * C = 45 < 48
        (wide, rng.standard_normal((8, 16, 2, 3)), (1, 1), False),  # kh * C = 32, C * kw = 48
        (wide, rng.standard_normal((8, 16, 3, 2)), (1, 1), True),  # kh * C = 48, C * kw = 32
    ):
        _, cache = F.conv_forward(x, w, np.zeros(8), stride, (1,) * 4)
        assert isinstance(cache, F.WindowRowsCache) == window_rows


def test_window_rows_match_torch(window_rows_everywhere):
    assert isinstance(assert_conv_matches_torch((3, 2)), F.WindowRowsCache)
