"""Column groups: the stride-1 convolutions of few filters and wide kernels (LeNet-5's first)
on large batches. These check them against finite differences, against im2col and against
PyTorch, on output widths that are and are not a multiple of COLUMN_GROUP, with the rule widened
to small batches and narrow kernels so that small layers take them too."""

import numpy as np
import pytest

from cnn_core import functional as F

from ..support.conv_paths import assert_all_close, assert_conv_matches_torch, two_ways
from .test_gradients import functional_check

CASES = {  # kernel, input (H, W), padding; output widths 8, 7, 6, 5, 3, 1
    "k5-same": ((5, 5), (6, 8), (2, 2, 2, 2)),
    "k5-valid": ((5, 5), (7, 11), (0, 0, 0, 0)),
    "k5x6-asymmetric": ((5, 6), (6, 9), (1, 0, 2, 1)),
    "k7-pad3": ((7, 7), (5, 5), (3, 3, 3, 3)),
    "k3-narrow": ((3, 3), (4, 5), (0, 0, 0, 0)),  # taken only with the widened rule
    "k2-one-column": ((2, 2), (3, 2), (0, 1, 0, 0)),
}


@pytest.fixture
def column_groups_everywhere(monkeypatch):
    """Column groups for every stride-1 conv of up to 8 filters, any kernel width and batch,
    and no window rows or Winograd before them."""
    monkeypatch.setattr(F, "COLUMN_GROUPS_MIN_WIDTH", 1)
    monkeypatch.setattr(F, "COLUMN_GROUPS_MIN_BATCH", 1)
    monkeypatch.setattr(F, "WINDOW_ROWS_MIN_DEPTH", 10**9)
    monkeypatch.setattr(F, "WINOGRAD_MIN_CHANNELS", 10**9)


def im2col_and_column_groups(monkeypatch, x, w, b, padding, need_dx=True):
    """(out, dx, dw, db) by im2col, then by column groups (see :func:`two_ways`)."""
    setting, values = "COLUMN_GROUPS_MAX_FILTERS", (0, 8)
    return two_ways(monkeypatch, setting, values, F.ColumnGroupsCache, x, w, b, padding, need_dx)


@pytest.mark.parametrize("kernel, size, padding", CASES.values(), ids=CASES.keys())
def test_column_groups_gradients(column_groups_everywhere, kernel, size, padding):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, *size, 3))
    w = rng.standard_normal((3, 2, *kernel))
    b = rng.standard_normal(3)
    assert isinstance(F.conv_forward(x, w, b, (1, 1), padding)[1], F.ColumnGroupsCache)
    functional_check(
        lambda x, w, b: F.conv_forward(x, w, b, (1, 1), padding), F.conv_backward, (x, w, b)
    )


@pytest.mark.parametrize("kernel, size, padding", CASES.values(), ids=CASES.keys())
def test_column_groups_equal_im2col_in_float64(
    column_groups_everywhere, monkeypatch, kernel, size, padding
):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, *size, 4)), rng.standard_normal((6, 3, *kernel)), np.ones(6)
    for need_dx in (True, False):
        im2col, groups = im2col_and_column_groups(monkeypatch, x, w, b, padding, need_dx)
        assert_all_close(groups, im2col, 1e-12)


def test_random_shapes_equal_im2col_in_float64(monkeypatch):
    """Random channels, filters, kernels, maps and pads, with the default rule but any batch."""
    monkeypatch.setattr(F, "COLUMN_GROUPS_MIN_BATCH", 1)
    rng = np.random.default_rng(9)
    for _ in range(20):
        c, f = int(rng.integers(1, 4)), int(rng.integers(1, 9))
        kh, kw = int(rng.integers(1, 7)), int(rng.integers(5, 8))
        padding = tuple(int(p) for p in rng.integers(0, 4, 4))
        h = int(rng.integers(max(1, kh - padding[0] - padding[1]), 12))
        width = int(rng.integers(max(1, kw - padding[2] - padding[3]), 14))
        x = rng.standard_normal((c, h, width, int(rng.integers(1, 5))))
        w, b = rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
        im2col, groups = im2col_and_column_groups(monkeypatch, x, w, b, padding)
        assert_all_close(groups, im2col, 1e-11)


def test_lenet_first_layer_uses_column_groups_within_float32_rounding(monkeypatch):
    """LeNet-5's first layer at batch 64, with and without a workspace (training and
    prediction): column groups by default, float32 kept end to end."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 28, 28, 64), dtype=np.float32)
    w = rng.standard_normal((6, 1, 5, 5), dtype=np.float32) * np.float32(0.2)
    b = rng.standard_normal(6).astype(np.float32)
    padding = (2,) * 4
    assert isinstance(F.conv_forward(x, w, b, (1, 1), padding)[1], F.ColumnGroupsCache)
    np.testing.assert_array_equal(
        F.conv_forward(x, w, b, (1, 1), padding)[0],
        F.conv_forward(x, w, b, (1, 1), padding, F.Workspace())[0],
    )
    im2col, groups = im2col_and_column_groups(monkeypatch, x, w, b, padding, need_dx=False)
    for ours, reference in zip(groups, im2col, strict=True):
        if reference is None:
            assert ours is None
            continue
        assert ours.dtype == np.float32
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


def test_many_filters_narrow_kernels_small_batches_and_strides_keep_other_paths():
    rng = np.random.default_rng(7)
    large = rng.standard_normal((1, 12, 12, 32))
    for x, w_shape, stride, groups in (
        (large, (8, 1, 5, 5), (1, 1), True),
        (large[..., :31], (8, 1, 5, 5), (1, 1), False),  # a batch too small
        (large, (9, 1, 5, 5), (1, 1), False),  # enough filters for im2col's product
        (large, (8, 1, 5, 4), (1, 1), False),  # too narrow: the band would be mostly zeros
        (large, (8, 1, 4, 5), (1, 1), True),  # only the width counts
        (large, (8, 1, 5, 5), (2, 2), False),
        (large, (8, 1, 5, 5), (1, 2), False),
    ):
        w = rng.standard_normal(w_shape)
        _, cache = F.conv_forward(x, w, np.zeros(w_shape[0]), stride, (1,) * 4)
        assert isinstance(cache, F.ColumnGroupsCache) == groups


def test_column_groups_match_torch(column_groups_everywhere):
    assert isinstance(assert_conv_matches_torch((5, 5)), F.ColumnGroupsCache)
