"""Known-value tests for the kernels of cnn_core.functional on tiny hand-computed inputs.

The kernels work in the internal batch-innermost layout: maps (C, H, W, N), vectors (D, N).
Every expected array below was worked out by hand (the comments show the arithmetic); none is
produced by running the code under test.
"""

import numpy as np
import pytest

from cnn_core import functional as F

X3 = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
W22 = np.array([[1.0, 2], [3, 4]])


def maps(*images):
    """Stack (H, W) images of one channel into internal (1, H, W, N) maps."""
    return np.stack(images, axis=-1)[None].astype(np.float64)


def image(x, n=0, c=0):
    """Channel c of sample n of internal maps, as an (H, W) array."""
    return x[c, :, :, n]


# --------------------------------------------------------------------------------- output size


@pytest.mark.parametrize(
    "size, kernel, stride, before, after, expected",
    [
        (5, 3, 1, 0, 0, 3),  # 5 - 3 + 1
        (5, 3, 2, 0, 0, 2),  # positions 0, 2
        (6, 3, 2, 0, 0, 2),  # positions 0, 2 (3 would need index 5..7)
        (7, 3, 2, 0, 0, 3),  # positions 0, 2, 4
        (5, 3, 2, 1, 1, 3),  # padded to 7
        (4, 2, 2, 0, 1, 2),  # padded to 5: positions 0, 2
        (28, 5, 1, 2, 2, 28),  # LeNet's "same" first layer
        (3, 3, 1, 0, 0, 1),
        (1, 1, 3, 0, 0, 1),
    ],
    ids=lambda v: str(v),  # size-kernel-stride-before-after-expected
)
def test_output_size(size, kernel, stride, before, after, expected):
    assert F.output_size(size, kernel, stride, before, after) == expected


@pytest.mark.parametrize(
    "h, w, k, stride, padding, expected",
    [
        (5, 5, (3, 3), (1, 1), (0, 0, 0, 0), (3, 3)),
        (5, 7, (3, 2), (2, 3), (0, 0, 0, 0), (2, 2)),
        (5, 5, (2, 2), (2, 2), (1, 1, 1, 1), (3, 3)),
        (4, 4, (2, 2), (1, 1), (0, 1, 0, 1), (4, 4)),
    ],
    ids=["valid", "non-square", "padded-stride2", "asymmetric-pad"],
)
def test_conv_output_shape_matches_formula(h, w, k, stride, padding, expected):
    x = np.ones((2, h, w, 3))
    wt = np.ones((4, 2, *k))
    out, _ = F.conv_forward(x, wt, np.zeros(4), stride, padding)
    assert out.shape == (4, *expected, 3)


# -------------------------------------------------------------------------------- convolution


def test_conv_valid_known_values_is_cross_correlation():
    # out[i, j] = sum_{a,b} x[i+a, j+b] * w[a, b] (no kernel flip), + bias 0.5
    # (0,0): 1*1 + 2*2 + 4*3 + 5*4 = 37   (0,1): 2 + 6 + 15 + 24 = 47
    # (1,0): 4 + 10 + 21 + 32 = 67        (1,1): 5 + 12 + 24 + 36 = 77
    x = maps(X3, 2 * X3)  # second sample: twice the first, so (out - b) doubles
    out, _ = F.conv_forward(x, W22[None, None], np.array([0.5]), (1, 1), (0, 0, 0, 0))
    expected = np.array([[37.0, 47], [67, 77]])
    np.testing.assert_array_equal(image(out, 0), expected + 0.5)
    np.testing.assert_array_equal(image(out, 1), 2 * expected + 0.5)


def test_conv_stride2_padding1_known_values():
    # zero-padded to 5x5; 2x2 windows at padded rows/cols 0 and 2:
    # (0,0): [[0,0],[0,1]] -> 4*1 = 4          (0,2): [[0,0],[2,3]] -> 3*2 + 4*3 = 18
    # (2,0): [[0,4],[0,7]] -> 2*4 + 4*7 = 36   (2,2): [[5,6],[8,9]] -> 5 + 12 + 24 + 36 = 77
    out, _ = F.conv_forward(maps(X3), W22[None, None], np.zeros(1), (2, 2), (1, 1, 1, 1))
    np.testing.assert_array_equal(image(out), [[4.0, 18], [36, 77]])


def test_conv_sums_over_input_channels_and_keeps_filters_apart():
    # channel 0 = X3, channel 1 = all ones. Filter 0: W22 on channel 0, ones on channel 1
    # -> 37+4, 47+4, 67+4, 77+4. Filter 1: only -1 at (1,1) of channel 0 -> -x[i+1, j+1].
    x = np.stack([X3, np.ones((3, 3))])[..., None]
    w = np.zeros((2, 2, 2, 2))
    w[0, 0], w[0, 1] = W22, 1.0
    w[1, 0, 1, 1] = -1.0
    out, _ = F.conv_forward(x, w, np.array([0.0, 10.0]), (1, 1), (0, 0, 0, 0))
    np.testing.assert_array_equal(out[0, :, :, 0], [[41.0, 51], [71, 81]])
    np.testing.assert_array_equal(out[1, :, :, 0], [[10.0 - 5, 10 - 6], [10 - 8, 10 - 9]])


def test_conv_asymmetric_padding_bottom_right():
    # pads (top 0, bottom 1, left 0, right 1) on a 2x2 input, 2x2 ones kernel, stride 1:
    # the input [[1,2],[3,4]] becomes [[1,2,0],[3,4,0],[0,0,0]] -> sums of 2x2 windows
    x = maps(np.array([[1.0, 2], [3, 4]]))
    out, _ = F.conv_forward(x, np.ones((1, 1, 2, 2)), np.zeros(1), (1, 1), (0, 1, 0, 1))
    np.testing.assert_array_equal(image(out), [[10.0, 6], [7, 4]])


def test_conv_backward_valid_known_values():
    # dout = ones: dw[a,b] = sum of x over the 4 window positions shifted by (a,b)
    #   dw = [[1+2+4+5, 2+3+5+6], [4+5+7+8, 5+6+8+9]] = [[12, 16], [24, 28]], db = 4
    # dx[p,q] = sum of w[a,b] over windows covering (p,q) = "full" correlation
    #   [[1, 1+2, 2], [1+3, 1+2+3+4, 2+4], [3, 3+4, 4]]
    _, cache = F.conv_forward(maps(X3), W22[None, None], np.zeros(1), (1, 1), (0, 0, 0, 0))
    dx, dw, db = F.conv_backward(np.ones((1, 2, 2, 1)), cache)
    np.testing.assert_array_equal(dw[0, 0], [[12.0, 16], [24, 28]])
    np.testing.assert_array_equal(db, [4.0])
    np.testing.assert_array_equal(image(dx), [[1.0, 3, 2], [4, 10, 6], [3, 7, 4]])


def test_conv_backward_stride2_padding1_known_values():
    # windows at padded (0,0), (0,2), (2,0), (2,2) tile the padded 4x4 corner, so with
    # dout = ones: padded dx[r, c] = w[r % 2, c % 2] for r, c < 4, and x sits at padded 1..3:
    #   dx = [[w11, w10, w11], [w01, w00, w01], [w11, w10, w11]] = [[4,3,4],[2,1,2],[4,3,4]]
    # dw[a,b] = sum of padded x at (a + 2i, b + 2j):
    #   dw00 = 0+0+0+5 = 5, dw01 = 0+0+4+6 = 10, dw10 = 0+2+0+8 = 10, dw11 = 1+3+7+9 = 20
    _, cache = F.conv_forward(maps(X3), W22[None, None], np.zeros(1), (2, 2), (1, 1, 1, 1))
    dx, dw, db = F.conv_backward(np.ones((1, 2, 2, 1)), cache)
    np.testing.assert_array_equal(image(dx), [[4.0, 3, 4], [2, 1, 2], [4, 3, 4]])
    np.testing.assert_array_equal(dw[0, 0], [[5.0, 10], [10, 20]])
    np.testing.assert_array_equal(db, [4.0])


def test_conv_backward_weights_dout_and_batch():
    # dout = [[1, 0], [0, 0]] on sample 0 and [[0, 0], [0, 2]] on sample 1 (x1 = 2 x0):
    # dw = 1 * window(0,0) of x0 + 2 * window(1,1) of x1 = [[1,2],[4,5]] + 4 [[5,6],[8,9]]
    # dx of sample 0 = w at (0,0); dx of sample 1 = 2 w at (1,1)
    _, cache = F.conv_forward(maps(X3, 2 * X3), W22[None, None], np.zeros(1), (1, 1), (0, 0, 0, 0))
    dout = np.zeros((1, 2, 2, 2))
    dout[0, 0, 0, 0], dout[0, 1, 1, 1] = 1.0, 2.0
    dx, dw, db = F.conv_backward(dout, cache)
    np.testing.assert_array_equal(dw[0, 0], [[1.0 + 20, 2 + 24], [4 + 32, 5 + 36]])
    np.testing.assert_array_equal(db, [3.0])
    np.testing.assert_array_equal(image(dx, 0), [[1.0, 2, 0], [3, 4, 0], [0, 0, 0]])
    np.testing.assert_array_equal(image(dx, 1), [[0.0, 0, 0], [0, 2, 4], [0, 6, 8]])


def test_conv_backward_without_dx():
    _, cache = F.conv_forward(maps(X3), W22[None, None], np.zeros(1), (1, 1), (0, 0, 0, 0))
    dx, dw, db = F.conv_backward(np.ones((1, 2, 2, 1)), cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw[0, 0], [[12.0, 16], [24, 28]])
    np.testing.assert_array_equal(db, [4.0])


# ----------------------------------------------------------------------------------- max pool


def test_maxpool_non_overlapping_known_values():
    x = np.array([[1.0, 3, 2, 0], [4, 2, 1, 5], [0, -1, 7, 6], [2, 8, 6, 3]])
    out, cache = F.maxpool_forward(maps(x), (2, 2), (2, 2))
    np.testing.assert_array_equal(image(out), [[4.0, 5], [8, 7]])
    dx = F.maxpool_backward(np.array([[1.0, 2], [3, 4]])[None, ..., None], cache)
    expected = np.zeros((4, 4))
    expected[1, 0], expected[1, 3], expected[3, 1], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(image(dx), expected)


def test_maxpool_all_negative_inputs():
    # a max initialised at 0 instead of the first window element would answer 0 here
    x = -np.arange(1.0, 17).reshape(4, 4)
    out, cache = F.maxpool_forward(maps(x), (2, 2), (2, 2))
    np.testing.assert_array_equal(image(out), [[-1.0, -3], [-9, -11]])
    dx = F.maxpool_backward(np.ones((1, 2, 2, 1)), cache)
    assert image(dx)[0, 0] == 1 and image(dx)[2, 2] == 1 and dx.sum() == 4


def test_maxpool_overlapping_windows_accumulate_gradient():
    # pool 2 stride 1 on 3x3: the centre 9 is the max of all four windows,
    # so it collects every output gradient: 1 + 2 + 3 + 4 = 10
    x = np.array([[1.0, 2, 3], [4, 9, 5], [6, 7, 8]])
    out, cache = F.maxpool_forward(maps(x), (2, 2), (1, 1))
    np.testing.assert_array_equal(image(out), [[9.0, 9], [9, 9]])
    dx = F.maxpool_backward(np.array([[1.0, 2], [3, 4]])[None, ..., None], cache)
    expected = np.zeros((3, 3))
    expected[1, 1] = 10
    np.testing.assert_array_equal(image(dx), expected)


def test_maxpool_pool3_stride2_known_values():
    # 5x5 of 0..24 with a spike of 100 at (2, 2), shared by all four 3x3 windows
    x = np.arange(25.0).reshape(5, 5)
    x[2, 2] = 100
    out, cache = F.maxpool_forward(maps(x), (3, 3), (2, 2))
    np.testing.assert_array_equal(image(out), [[100.0, 100], [100, 100]])
    x[2, 2] = 12  # back to the ramp: each window's max is its bottom-right corner
    out, cache = F.maxpool_forward(maps(x), (3, 3), (2, 2))
    np.testing.assert_array_equal(image(out), [[12.0, 14], [22, 24]])
    dx = F.maxpool_backward(np.array([[1.0, 2], [3, 4]])[None, ..., None], cache)
    expected = np.zeros((5, 5))
    expected[2, 2], expected[2, 4], expected[4, 2], expected[4, 4] = 1, 2, 3, 4
    np.testing.assert_array_equal(image(dx), expected)


def test_maxpool_tie_gradient_goes_to_first_max_only():
    # all four equal: the first in row-major order takes the whole gradient
    out, cache = F.maxpool_forward(maps(np.full((2, 2), 5.0)), (2, 2), (2, 2))
    assert image(out)[0, 0] == 5
    np.testing.assert_array_equal(
        image(F.maxpool_backward(np.full((1, 1, 1, 1), 3.0), cache)), [[3.0, 0], [0, 0]]
    )
    # tie between (0,1) and (1,0): (0,1) comes first in row-major order
    out, cache = F.maxpool_forward(maps(np.array([[1.0, 7], [7, 2]])), (2, 2), (2, 2))
    np.testing.assert_array_equal(
        image(F.maxpool_backward(np.ones((1, 1, 1, 1)), cache)), [[0.0, 1], [0, 0]]
    )


def test_maxpool_tie_with_overlapping_windows():
    # all ones, pool 2 stride 1: each window gives its gradient to its own top-left element
    _, cache = F.maxpool_forward(maps(np.ones((3, 3))), (2, 2), (1, 1))
    dout = np.array([[1.0, 2], [3, 4]])[None, ..., None]
    np.testing.assert_array_equal(
        image(F.maxpool_backward(dout, cache)), [[1.0, 2, 0], [3, 4, 0], [0, 0, 0]]
    )


def test_maxpool_non_square_window_and_stride_per_channel_and_sample():
    # pool (1, 2), stride (1, 2): max of horizontal pairs; channels and samples independent
    a = np.array([[1.0, 2, 6, 3], [9, 4, 0, 5]])
    x = np.stack([np.stack([a, -a], -1), np.stack([a * 10, a + 1], -1)])  # (2, 2, 4, 2)
    out, _ = F.maxpool_forward(x, (1, 2), (1, 2))
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(out[0, :, :, 0], [[2.0, 6], [9, 5]])
    np.testing.assert_array_equal(out[0, :, :, 1], [[-1.0, -3], [-4, 0]])
    np.testing.assert_array_equal(out[1, :, :, 0], [[20.0, 60], [90, 50]])
    np.testing.assert_array_equal(out[1, :, :, 1], [[3.0, 7], [10, 6]])


# ----------------------------------------------------------------------------------- avg pool


def test_avgpool_non_overlapping_known_values():
    x = np.arange(16.0).reshape(4, 4)
    out, cache = F.avgpool_forward(maps(x), (2, 2), (2, 2))
    # (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, (8+9+12+13)/4 = 10.5, (10+11+14+15)/4 = 12.5
    np.testing.assert_array_equal(image(out), [[2.5, 4.5], [10.5, 12.5]])
    dx = F.avgpool_backward(np.array([[4.0, 8], [12, 16]])[None, ..., None], cache)
    np.testing.assert_array_equal(
        image(dx), [[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    )


def test_avgpool_overlapping_known_values():
    # pool 2 stride 1 on X3: means of the four 2x2 windows (12/4, 16/4, 24/4, 28/4)
    out, cache = F.avgpool_forward(maps(X3), (2, 2), (1, 1))
    np.testing.assert_array_equal(image(out), [[3.0, 4], [6, 7]])
    # dout = ones * 4: each input gets 1 per window covering it
    dx = F.avgpool_backward(np.full((1, 2, 2, 1), 4.0), cache)
    np.testing.assert_array_equal(image(dx), [[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_avgpool_pool3_stride2_known_values():
    x = np.arange(25.0).reshape(5, 5)
    out, cache = F.avgpool_forward(maps(x), (3, 3), (2, 2))
    # window means = values at the window centres (1,1), (1,3), (3,1), (3,3) of a linear ramp
    np.testing.assert_allclose(image(out), [[6.0, 8], [16, 18]], rtol=1e-15)
    dx = F.avgpool_backward(np.full((1, 2, 2, 1), 9.0), cache)
    # counts of windows covering each pixel: rows/cols 0,1 -> 1, 2 -> 2, 3,4 -> 1
    cover = np.array([1.0, 1, 2, 1, 1])
    np.testing.assert_allclose(image(dx), np.outer(cover, cover), rtol=1e-15)


# -------------------------------------------------------------------------------------- dense


def test_dense_known_values():
    a = np.array([[1.0, -1], [2, 0], [3, 1]])  # (D=3, N=2)
    w = np.array([[1.0, 0, -1], [2, 1, 0]])  # (U=2, D=3)
    z, cache = F.dense_forward(a, w, np.array([0.5, -1]))
    np.testing.assert_array_equal(z, [[1 - 3 + 0.5, -1 - 1 + 0.5], [2 + 2 - 1, -2 + 0 - 1]])
    dz = np.array([[1.0, 2], [0, -1]])
    da, dw, db = F.dense_backward(dz, cache)
    np.testing.assert_array_equal(dw, [[1 - 2, 2 + 0, 3 + 2], [0 + 1, 0, 0 - 1]])
    np.testing.assert_array_equal(db, [3.0, -1])
    np.testing.assert_array_equal(da, [[1.0, 2 - 2], [0, -1], [-1, -2]])
    assert F.dense_backward(dz, cache, need_dx=False)[0] is None


# -------------------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    "name, z, a, slope",
    [
        ("relu", [-2.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 1.0]),
        ("leaky_relu", [-2.0, 0.0, 3.0], [-0.02, 0.0, 3.0], [0.01, 0.01, 1.0]),  # torch's at 0
        ("sigmoid", [0.0, np.log(3.0)], [0.5, 0.75], [0.25, 0.1875]),
        ("tanh", [0.0, np.log(2.0)], [0.0, 0.6], [1.0, 0.64]),  # tanh(ln 2) = 3/5
        ("linear", [-2.0, 5.0], [-2.0, 5.0], [1.0, 1.0]),
    ],
    ids=["relu", "leaky_relu", "sigmoid", "tanh", "linear"],
)
def test_activation_forward_backward_known_values(name, z, a, slope):
    z = np.array(z)[:, None]
    out, cache = F.activation_forward(name, z.copy())
    np.testing.assert_allclose(out[:, 0], a, rtol=1e-15, atol=1e-15)
    da = np.full_like(z, 2.0)
    np.testing.assert_allclose(
        F.activation_backward(name, da, cache)[:, 0], 2 * np.array(slope), rtol=1e-14, atol=1e-15
    )


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="unknown activation"):
        F.activation_forward("gelu", np.zeros((2, 2)))


def test_sigmoid_is_stable_for_huge_logits():
    z = np.array([-1e4, -800.0, -30.0, 0.0, 30.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = F.sigmoid(z)
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    np.testing.assert_allclose(s[2], 1 / (1 + np.exp(30.0)), rtol=1e-14)
    np.testing.assert_allclose(s[4], 1 / (1 + np.exp(-30.0)), rtol=1e-14)


def test_softmax_known_values_and_huge_logits():
    z = np.array([[0.0, 1e4, -1e4], [np.log(3.0), -1e4, -1e4]])  # (K=2, N=3)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = F.softmax(z)
    np.testing.assert_allclose(p[:, 0], [0.25, 0.75], rtol=1e-15)
    np.testing.assert_array_equal(p[:, 1], [1.0, 0.0])
    np.testing.assert_array_equal(p[:, 2], [0.5, 0.5])


# ------------------------------------------------------------------------------------- losses


def test_softmax_cross_entropy_known_values():
    # p = [0.25, 0.75] for sample 0, [0.5, 0.5] for sample 1; labels 1 and 0
    z = np.array([[0.0, 2.0], [np.log(3.0), 2.0]])
    loss, dz = F.softmax_cross_entropy(z, np.array([1, 0]))
    np.testing.assert_allclose(loss, (-np.log(0.75) - np.log(0.5)) / 2, rtol=1e-14)
    np.testing.assert_allclose(
        dz, [[0.25 / 2, (0.5 - 1) / 2], [(0.75 - 1) / 2, 0.5 / 2]], rtol=1e-14
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_huge_logits(dtype):
    # sample 0: confident and right (loss 0); sample 1: confident and wrong (loss 2e4);
    # sample 2: a 1e4 tie between classes 0 and 2 with label 2 (loss ln 2)
    z = np.array([[1e4, -1e4, -1e4], [1e4, -1e4, -1e4], [1e4, -1e4, 1e4]], dtype=dtype).T
    y = np.array([0, 1, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, dz = F.softmax_cross_entropy(z, y)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (0 + 2e4 + np.log(2)) / 3, rtol=1e-6)
    assert dz.dtype == np.dtype(dtype)
    expected = np.array([[0.0, 0, 0], [1, -1, 0], [0.5, 0, -0.5]]).T / 3
    np.testing.assert_allclose(dz, expected, atol=1e-7)


def test_binary_cross_entropy_known_values():
    # z = 0: p = 1/2, loss ln 2 for either label; z = ln 3: p = 3/4
    z = np.array([[0.0, 0.0, np.log(3.0)]])
    loss, dz = F.binary_cross_entropy(z, np.array([1, 0, 0]))
    np.testing.assert_allclose(loss, (np.log(2) + np.log(2) - np.log(0.25)) / 3, rtol=1e-14)
    np.testing.assert_allclose(dz, [[(0.5 - 1) / 3, 0.5 / 3, 0.75 / 3]], rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([1, 0, 0, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, dz = F.binary_cross_entropy(z, y)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (0 + 0 + 1e4 + 1e4) / 4, rtol=1e-6)
    assert dz.dtype == np.dtype(dtype)
    np.testing.assert_allclose(dz, [[0.0, 0.0, 0.25, -0.25]], atol=1e-7)


# ---------------------------------------------------------------------------- dtypes, padding


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_every_kernel_keeps_the_dtype(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 3)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    b = np.zeros(3, dtype)
    out, cache = F.conv_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    dx, dw, db = F.conv_backward(out, cache)
    assert {a.dtype for a in (out, dx, dw, db)} == {np.dtype(dtype)}
    for forward, backward in (
        (F.maxpool_forward, F.maxpool_backward),
        (F.avgpool_forward, F.avgpool_backward),
    ):
        p, pc = forward(x, (2, 2), (1, 1))
        assert p.dtype == dtype and backward(p, pc).dtype == dtype
    for name in ("relu", "leaky_relu", "sigmoid", "tanh", "linear"):
        a, c = F.activation_forward(name, x.copy())
        assert a.dtype == dtype and F.activation_backward(name, x, c).dtype == dtype
    z = x.reshape(-1, 3)[:4]
    assert F.softmax(z).dtype == dtype
    assert F.softmax_cross_entropy(z, np.array([0, 1, 3]))[1].dtype == dtype
    assert F.binary_cross_entropy(z[:1], np.array([0, 1, 1]))[1].dtype == dtype


def test_pad_unpad_round_trip():
    x = np.arange(24.0).reshape(2, 3, 4, 1)
    p = F.pad_maps(x, (1, 2, 0, 3))
    assert p.shape == (2, 6, 7, 1)
    assert p[:, 0].sum() == 0 and p[:, 4:].sum() == 0 and p[:, :, 4:].sum() == 0
    np.testing.assert_array_equal(F.unpad_maps(p, (1, 2, 0, 3)), x)
    assert F.pad_maps(x, (0, 0, 0, 0)) is x
