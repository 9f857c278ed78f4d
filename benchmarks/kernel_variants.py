"""Why cnn_core's kernels are written the way they are: each choice against its alternative.

    .venv/bin/python benchmarks/kernel_variants.py

On LeNet-5's shapes and some VGG 3x3 convs (batch 64, float32, one BLAS thread), each pair
runs interleaved and the median of many calls is compared, because this machine's speed drifts:

1. batch-innermost (C, H, W, N) im2col against NCHW im2col for a conv forward pass;
2. the conv weight gradient as ``(cols @ d2.T).T`` against ``d2 @ cols.T``, and im2col built a
   block of output rows at a time against one whole matrix;
3. the conv input gradient as one product of every kernel offset per block of output rows,
   scattered while in cache, against one big product scattered afterwards, against
   ``np.add.at`` and against a product per kernel offset added in place (3f), in blocks of 4 MB
   against 512 KB (3g); and against dx
   as a convolution of dout with the flipped kernel (used for stride-1 convs on "same"-padded
   maps);
4. max-pool backward as a loop over window offsets on strided views, against an argmax over
   copied windows;
5. a 3x3 stride-1 conv by Winograd F(2x2, 3x3) against im2col on batches too small for window
   rows (a prediction of a few images, a shard of an epoch's last batch), for
   WINOGRAD_MIN_BATCH;
6. training vgg32 on 2 threads: the batch cut into shards computed by 2 processes (what
   ``fit`` does) against one process whose BLAS calls use 2 threads;
7. a 3x3 stride-1 conv (forward and backward) on window rows against the alternative each
   case names (im2col or Winograd), for the thresholds WINDOW_ROWS_MIN_DEPTH,
   WINDOW_ROWS_MIN_BATCH and WINOGRAD_MIN_CHANNELS;
8. the products of these networks' kernels by MKL's sequential GEMM against NumPy's OpenBLAS
   (``cnn_core.gemm``), for MKL_MIN_MACS and MKL_MIN_SIDE (skipped without MKL).
9. a first layer's stride-1 conv by column groups against im2col, for COLUMN_GROUPS_MAX_FILTERS
   and COLUMN_GROUPS_MIN_WIDTH;
10. on an AMD Zen 4 (AVX-512), the products of section 8, of the VGG convs' im2col blocks and
   of LeNet-5's first conv by column groups, by OpenBLAS's AVX2 kernels (Haswell, which
   ``cnn_core.gemm`` switches to there) against the AVX-512 ones it picks itself (SkylakeX).

Times 1-5 and 7-10 are this process's CPU time (one BLAS thread), so that other programs on the
shared cores do not count; 6 is wall time, median of 3 epochs each, interleaved.
"""

import statistics
import time
from functools import partial
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits
from train_throughput import BATCH, workload

from cnn_core import Network, gemm
from cnn_core import functional as F

N, K = 64, 5
rng = np.random.default_rng(0)


def median_ms(fn, repeats=60):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return statistics.median(samples) * 1e3


def compare(title, ours, theirs, rounds=3):
    a, b = [], []
    for _ in range(rounds):
        a.append(median_ms(ours[1]))
        b.append(median_ms(theirs[1]))
    a, b = statistics.median(a), statistics.median(b)
    print(
        f"{title}\n  {ours[0]:<44} {a:7.3f} ms\n"
        f"  {theirs[0]:<44} {b:7.3f} ms   ({b / a:.2f}x cnn_core's time)"
    )


def im2col(x, k):
    """The whole (C*k*k, Ho*Wo*N) column matrix of (C, H, W, N) maps."""
    c = x.shape[0]
    windows = sliding_window_view(x, (k, k), axis=(1, 2))
    return np.ascontiguousarray(windows.transpose(0, 4, 5, 1, 2, 3)).reshape(c * k * k, -1)


def conv_nchw(x, w):
    """im2col with the batch first: the copy moves runs of Wo values, and the product comes out
    as (F, N, Ho, Wo), which needs a transpose back to (N, F, Ho, Wo)."""
    f, c, kh, kw = w.shape
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C, Ho, Wo, kh, kw)
    n, _, ho, wo, _, _ = windows.shape
    cols = np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, -1)
    return np.ascontiguousarray(
        (w.reshape(f, -1) @ cols).reshape(f, n, ho, wo).transpose(1, 0, 2, 3)
    )


def main():
    x_first = rng.random((1, 32, 32, N), dtype=np.float32)  # padded 28x28 digits, (C, H, W, N)
    x_second = rng.random((6, 14, 14, N), dtype=np.float32)
    w_first = rng.standard_normal((6, 1, K, K), dtype=np.float32)
    w_second = rng.standard_normal((16, 6, K, K), dtype=np.float32)
    b_first, b_second = np.zeros(6, np.float32), np.zeros(16, np.float32)

    nchw = np.ascontiguousarray(x_second.transpose(3, 0, 1, 2))
    compare(
        "1. conv forward, second LeNet conv (6 -> 16 channels)",
        (
            "(C, H, W, N) im2col + matmul (cnn_core)",
            lambda: F.conv_forward(x_second, w_second, b_second, (1, 1), (0,) * 4),
        ),
        ("(N, C, H, W) im2col + matmul + transpose", lambda: conv_nchw(nchw, w_second)),
    )

    out, cache = F.conv_forward(x_first, w_first, b_first, (1, 1), (0,) * 4)
    d2 = out.reshape(6, -1)
    cols = im2col(x_first, K)
    compare(
        "2a. conv weight gradient, first LeNet conv",
        ("(cols @ d2.T).T (cnn_core)", lambda: (cols @ d2.T).T),
        ("d2 @ cols.T", lambda: d2 @ cols.T),
    )

    def whole_matrix():
        full = im2col(x_first, K)
        forward = w_first.reshape(6, -1) @ full
        return forward, (full @ d2.T).T

    def im2col_blocks():
        default, F.COLUMN_GROUPS_MAX_FILTERS = F.COLUMN_GROUPS_MAX_FILTERS, 0  # im2col
        try:
            cache = F.conv_forward(x_first, w_first, b_first, (1, 1), (0,) * 4)[1]
            return F.conv_backward(out, cache, need_dx=False)
        finally:
            F.COLUMN_GROUPS_MAX_FILTERS = default

    compare(
        "2b. conv forward + weight gradient, first LeNet conv",
        ("im2col a block of rows at a time (cnn_core's im2col)", im2col_blocks),
        ("im2col as one (C*kh*kw, Ho*Wo*N) matrix", whole_matrix),
    )

    out, cache = F.conv_forward(x_second, w_second, b_second, (1, 1), (0,) * 4)
    ho = out.shape[1]
    d2 = out.reshape(16, -1)

    def scatter_big_product():
        dcols = (w_second.reshape(16, -1).T @ d2).reshape(6, K, K, ho, ho, N)
        dx = np.zeros_like(x_second)
        for i in range(K):
            for j in range(K):
                dx[:, i : i + ho, j : j + ho, :] += dcols[:, i, j]
        return dx

    rows = np.arange(ho)[:, None] + np.arange(K)[None, :]  # (Ho, kh) input rows of each window

    def add_at():
        dcols = (w_second.reshape(16, -1).T @ d2).reshape(6, K, K, ho, ho, N)
        dx = np.zeros_like(x_second)
        r = rows.T[:, None, :, None]  # (kh, 1, Ho, 1)
        c = rows.T[None, :, None, :]  # (1, kw, 1, Wo)
        np.add.at(dx, (slice(None), r, c), dcols)
        return dx

    np.testing.assert_allclose(
        scatter_big_product(), F.conv_backward(out, cache)[0], rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(add_at(), F.conv_backward(out, cache)[0], rtol=1e-4, atol=1e-3)

    w_offsets = np.ascontiguousarray(w_second.transpose(2, 3, 1, 0))  # (kh, kw, C, F)

    def product_per_offset():
        dx, part = np.zeros_like(x_second), np.empty((6, d2.shape[1]), np.float32)
        for i in range(K):
            for j in range(K):
                gemm.matmul(w_offsets[i, j], d2, out=part)
                dx[:, i : i + ho, j : j + ho, :] += part.reshape(6, ho, ho, N)
        return dx

    np.testing.assert_allclose(
        product_per_offset(), F.conv_backward(out, cache)[0], rtol=1e-4, atol=1e-3
    )

    def weight_grads():
        return F.conv_backward(out, cache, need_dx=False)

    compare(
        "3a. conv backward (dW, db, dx), second LeNet conv",
        ("dx: a product per block of rows (cnn_core)", lambda: F.conv_backward(out, cache)),
        ("dx: one big product, then scatter", lambda: (weight_grads(), scatter_big_product())),
    )
    compare(
        "3b. conv backward (dW, db, dx), second LeNet conv",
        ("dx: a product per block of rows (cnn_core)", lambda: F.conv_backward(out, cache)),
        ("dx: one big product, then np.add.at", lambda: (weight_grads(), add_at())),
        rounds=1,
    )
    compare(
        "3f. conv backward (dW, db, dx), second LeNet conv",
        ("dx: a product per block of rows (cnn_core)", lambda: F.conv_backward(out, cache)),
        ("dx: one product per kernel offset", lambda: (weight_grads(), product_per_offset())),
    )

    def with_input_gradient_blocks(size):
        def backward():
            default, F.INPUT_GRADIENT_BLOCK_BYTES = F.INPUT_GRADIENT_BLOCK_BYTES, size
            try:
                return F.conv_backward(out, cache)
            finally:
                F.INPUT_GRADIENT_BLOCK_BYTES = default

        return backward

    compare(
        "3g. conv backward (dW, db, dx), second LeNet conv",
        ("dx: blocks of 4 MB, all 10 rows (cnn_core)", with_input_gradient_blocks(4 << 20)),
        ("dx: blocks of 512 KB, one row", with_input_gradient_blocks(512 << 10)),
    )

    for title, (c, f, h, k, pad) in {
        "3c. conv input gradient, second LeNet conv (6 -> 16, 5x5 valid)": (6, 16, 14, 5, 0),
        "3d. conv input gradient, VGG 3x3 conv (32 -> 32, 32x32 same)": (32, 32, 32, 3, 1),
        "3e. conv input gradient, VGG 3x3 conv (64 -> 64, 16x16 same)": (64, 64, 16, 3, 1),
    }.items():
        x = rng.standard_normal((c, h, h, N), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32)
        padding = (pad,) * 4
        dout = F.conv_forward(x, w, np.zeros(f, np.float32), (1, 1), padding)[0]
        xp = F.pad_maps(x, padding)
        by_correlation = partial(F._input_gradient_by_correlation, dout, w, padding, F.Workspace())
        by_offsets = partial(
            F._input_gradient_by_offsets, dout, w, xp.shape, (1, 1), padding, F.Workspace()
        )
        np.testing.assert_allclose(by_correlation(), by_offsets(), rtol=1e-3, atol=1e-2)
        compare(
            title,
            ("a convolution of dout (cnn_core on same maps)", by_correlation),
            ("a product per block (cnn_core on valid)", by_offsets),
            rounds=5,
        )

    relu = np.maximum(rng.standard_normal((6, 28, 28, N), dtype=np.float32), 0)
    pooled, pool_cache = F.maxpool_forward(relu, (2, 2), (2, 2))

    def argmax_backward():
        windows = (
            relu.reshape(6, 14, 2, 14, 2, N).transpose(0, 1, 3, 5, 2, 4).reshape(6, 14, 14, N, 4)
        )
        first = windows.argmax(axis=-1)[..., None]
        dwin = np.zeros_like(windows)
        np.put_along_axis(dwin, first, pooled[..., None], axis=-1)
        return dwin.reshape(6, 14, 14, N, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(relu.shape)

    np.testing.assert_array_equal(argmax_backward(), F.maxpool_backward(pooled, pool_cache))
    compare(
        "4. max-pool backward, 2x2 on (6, 28, 28, 64)",
        ("loop over window offsets (cnn_core)", lambda: F.maxpool_backward(pooled, pool_cache)),
        ("argmax over copied windows", argmax_backward),
    )

    winograd(WINOGRAD_CASES)
    window_rows(WINDOW_ROWS_CASES)
    if gemm.MKL_GEMMS:
        products(GEMM_CASES)
    column_groups(COLUMN_GROUPS_CASES)
    if gemm.PREFERRED_OPENBLAS_CORE:  # a Zen 4, whose OpenBLAS picked its AVX-512 kernels
        openblas_kernels(OPENBLAS_CASES)


OFF = 10**9  # a threshold no case reaches: the method it gates stays off


class Method(NamedTuple):
    """A conv method: its name, the cache type conv_forward returns with it, and the
    functional.py thresholds that force it."""

    name: str
    cache: type
    settings: dict


IM2COL = Method(
    "im2col",
    tuple,
    {"WINDOW_ROWS_MIN_DEPTH": OFF, "WINOGRAD_MIN_CHANNELS": OFF, "COLUMN_GROUPS_MAX_FILTERS": 0},
)
WINDOW_ROWS = Method(
    "window rows",
    F.WindowRowsCache,
    {"WINDOW_ROWS_MIN_DEPTH": 1, "WINDOW_ROWS_MIN_BATCH": 1, "WINOGRAD_MIN_CHANNELS": OFF},
)
WINOGRAD = Method(
    "Winograd F(2x2, 3x3)",
    F.WinogradCache,
    {"WINOGRAD_MIN_CHANNELS": 1, "WINOGRAD_MIN_BATCH": 1},
)
COLUMN_GROUPS = Method(
    "column groups",
    F.ColumnGroupsCache,
    {
        "WINDOW_ROWS_MIN_DEPTH": OFF,
        "WINOGRAD_MIN_CHANNELS": OFF,
        "COLUMN_GROUPS_MAX_FILTERS": OFF,
        "COLUMN_GROUPS_MIN_WIDTH": 1,
        "COLUMN_GROUPS_MIN_BATCH": 1,
    },
)


def conv_methods(title, x, w, padding, methods, train, need_dx=True):
    """Time a stride-1 conv of x by each of two ``methods`` (see IM2COL), cnn_core's choice
    first: forward and backward with a workspace (training), or forward alone without one
    (prediction). The thresholds are put back afterwards."""
    defaults = {name: getattr(F, name) for method in methods for name in method.settings}
    b = np.zeros(len(w), np.float32)
    chosen = type(F.conv_forward(x, w, b, (1, 1), padding)[1])
    assert chosen in [method.cache for method in methods], f"{title}: cnn_core's choice"

    def use(settings):
        for name, value in settings.items():
            setattr(F, name, value)

    def step(method):
        ws = F.Workspace() if train else None

        def run():
            use(method.settings)
            out, cache = F.conv_forward(x, w, b, (1, 1), padding, ws)
            assert type(cache) is method.cache, f"{title}: not {method.name}"
            if train:
                F.conv_backward(out, cache, need_dx)

        return run

    ours, theirs = sorted(methods, key=lambda method: method.cache is not chosen)
    compare(title, (f"{ours.name} (cnn_core)", step(ours)), (theirs.name, step(theirs)))
    use(defaults)


def winograd(cases):
    """Section 5: a 3x3 conv by Winograd against im2col on batches too small for window rows."""
    for title, (c, f, size, n, train) in cases.items():
        x = rng.standard_normal((c, size, size, n), dtype=np.float32)
        w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * np.float32(0.05)
        conv_methods(title, x, w, (1,) * 4, (WINOGRAD, IM2COL), train)


# (channels, filters, size, batch, training): "same" padding, one BLAS thread; batches under
# WINDOW_ROWS_MIN_BATCH, as a prediction of a few images or a shard of an epoch's last batch.
WINOGRAD_CASES = {
    "5a. 3x3 conv 64 -> 64, 14x14, one image, predicting (convnet)": (64, 64, 14, 1, False),
    "5b. 3x3 conv 64 -> 64, 16x16, 8 images, predicting (vgg32)": (64, 64, 16, 8, False),
    "5c. 3x3 conv 128 -> 128, 16x16, one image, predicting (vgg64)": (128, 128, 16, 1, False),
    "5d. 3x3 conv 128 -> 128, 16x16, 8 images, predicting (vgg64)": (128, 128, 16, 8, False),
    "5e. 3x3 conv 64 -> 64, 16x16, batch 8, training (vgg32)": (64, 64, 16, 8, True),
    "5f. 3x3 conv 128 -> 128, 16x16, batch 8, training (vgg64)": (128, 128, 16, 8, True),
}


def window_rows(cases):
    """Section 7: a 3x3 conv's forward and full backward by window rows, against im2col or
    Winograd (the case says which)."""
    for title, (c, f, size, n, other) in cases.items():
        x = rng.standard_normal((c, size, size, n), dtype=np.float32)
        w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * np.float32(0.05)
        conv_methods(title, x, w, (1,) * 4, (WINDOW_ROWS, other), train=True)


# (channels, filters, size, batch, the alternative to window rows)
WINDOW_ROWS_CASES = {
    "7a. 3x3 conv 32 -> 32, 32x32 maps, batch 64 (vgg32)": (32, 32, 32, 64, IM2COL),
    "7b. 3x3 conv 32 -> 64, 16x16 maps, batch 64 (vgg32)": (32, 64, 16, 64, IM2COL),
    "7c. 3x3 conv 32 -> 64, 14x14 maps, batch 64 (convnet)": (32, 64, 14, 64, IM2COL),
    "7d. 3x3 conv 32 -> 32, 32x32 maps, batch 32 (vgg32, a shard of 2)": (32, 32, 32, 32, IM2COL),
    "7e. 3x3 conv 16 -> 16, 32x32 maps, batch 64": (16, 16, 32, 64, IM2COL),
    "7f. 3x3 conv 8 -> 16, 32x32 maps, batch 64": (8, 16, 32, 64, IM2COL),
    "7g. 3x3 conv 32 -> 32, 32x32 maps, batch 8": (32, 32, 32, 8, IM2COL),
    "7h. 3x3 conv 32 -> 32, 32x32 maps, batch 16": (32, 32, 32, 16, IM2COL),
    "7i. 3x3 conv 64 -> 64, 16x16 maps, batch 64 (vgg32)": (64, 64, 16, 64, WINOGRAD),
    "7j. 3x3 conv 64 -> 64, 32x32 maps, batch 64 (vgg64)": (64, 64, 32, 64, WINOGRAD),
    "7k. 3x3 conv 64 -> 128, 16x16 maps, batch 64 (vgg64)": (64, 128, 16, 64, WINOGRAD),
    "7l. 3x3 conv 128 -> 128, 16x16 maps, batch 64 (vgg64)": (128, 128, 16, 64, WINOGRAD),
    "7m. 3x3 conv 32 -> 32, 28x28 maps, batch 64 (convnet)": (32, 32, 28, 64, IM2COL),
    "7n. 3x3 conv 64 -> 64, 14x14 maps, batch 64 (convnet)": (64, 64, 14, 64, WINOGRAD),
    "7o. 3x3 conv 128 -> 128, 16x16 maps, batch 32 (vgg64 shard)": (128, 128, 16, 32, WINOGRAD),
    "7p. 3x3 conv 128 -> 128, 16x16 maps, batch 16": (128, 128, 16, 16, WINOGRAD),
    "7q. 3x3 conv 128 -> 128, 8x8 maps, batch 64": (128, 128, 8, 64, WINOGRAD),
}


def column_groups(cases):
    """Section 9: a first layer's stride-1 conv by column groups against im2col (training
    computes no dx, as for a first layer)."""
    for title, (c, f, size, k, n, train) in cases.items():
        x = rng.standard_normal((c, size, size, n), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32) * np.float32(0.1)
        methods = (COLUMN_GROUPS, IM2COL)
        conv_methods(title, x, w, (k // 2,) * 4, methods, train, need_dx=False)


# (channels, filters, size, kernel, batch, training): "same" padding, one BLAS thread;
# training is forward and weight gradient, predicting forward alone.
COLUMN_GROUPS_CASES = {
    "9a. 5x5 conv 1 -> 6, 28x28, batch 64, training (LeNet-5)": (1, 6, 28, 5, 64, True),
    "9b. 5x5 conv 1 -> 6, 28x28, 256 images, predicting": (1, 6, 28, 5, 256, False),
    "9c. 5x5 conv 1 -> 6, 28x28, one image, predicting": (1, 6, 28, 5, 1, False),
    "9d. 5x5 conv 3 -> 8, 32x32, batch 64, training": (3, 8, 32, 5, 64, True),
    "9e. 7x7 conv 3 -> 8, 32x32, batch 64, training": (3, 8, 32, 7, 64, True),
    "9f. 5x5 conv 1 -> 16, 28x28, batch 64, training (many filters)": (1, 16, 28, 5, 64, True),
    "9g. 3x3 conv 1 -> 8, 28x28, batch 64, training (narrow kernel)": (1, 8, 28, 3, 64, True),
}


# (m, k, n, b transposed): products the kernels make, as (F, depth) @ (depth, columns) in
# forward and with the columns as depth in the weight gradients (b a transposed view). 8g-8j
# are the window-row products as they were before padded rows (depth kh * kw * C), 8l-8o
# as they are now (depth kh * C, kw of them per row; here on contiguous operands, where the
# kernels read the windows as a strided view of the padded rows).
GEMM_CASES = {
    "8a. LeNet-5 first conv forward, (6, 25) @ (25, 5242)": (6, 25, 5242, False),
    "8b. LeNet-5 first conv dW, (25, 5242) @ (5242, 6)": (25, 5242, 6, True),
    "8c. LeNet-5 second conv forward, (16, 150) @ (150, 640)": (16, 150, 640, False),
    "8d. LeNet-5 second conv dW, (150, 640) @ (640, 16)": (150, 640, 16, True),
    "8e. LeNet-5 dense 400 -> 120, (120, 400) @ (400, 64)": (120, 400, 64, False),
    "8f. LeNet-5 dense 120 -> 84, (84, 120) @ (120, 64)": (84, 120, 64, False),
    "8g. convnet 32 -> 32 window row, (32, 288) @ (288, 1792)": (32, 288, 1792, False),
    "8h. convnet 32 -> 32 dW share, (288, 1792) @ (1792, 32)": (288, 1792, 32, True),
    "8i. convnet 64 -> 64 window row, (64, 576) @ (576, 896)": (64, 576, 896, False),
    "8j. convnet 64 -> 64 dW share, (576, 896) @ (896, 64)": (576, 896, 64, True),
    "8k. convnet dense 3136 -> 256, (256, 3136) @ (3136, 64)": (256, 3136, 64, False),
    "8l. convnet 32 -> 32 window row offset, (32, 96) @ (96, 1792)": (32, 96, 1792, False),
    "8m. convnet 32 -> 32 dW share, (96, 1792) @ (1792, 32)": (96, 1792, 32, True),
    "8n. convnet 64 -> 64 window row offset, (64, 192) @ (192, 896)": (64, 192, 896, False),
    "8o. convnet 64 -> 64 dW share, (192, 896) @ (896, 64)": (192, 896, 64, True),
}


def product_operands(m, k, n, b_transposed):
    """(a, b, out) of an (m, k) @ (k, n) float32 product, b a transposed view if asked."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if b_transposed else (k, n), dtype=np.float32)
    return a, b.T if b_transposed else b, np.empty((m, n), np.float32)


def products(cases):
    """Section 8: each product by cnn_core.gemm's choice first, then by the other library (on
    a CPU where MKL computes nothing, an AMD one, the choice is NumPy's for every product)."""
    defaults = gemm.MKL_MIN_MACS, gemm.MKL_MIN_SIDE
    uses_mkl, chosen = gemm.BACKEND == "mkl", gemm._GEMM
    gemm._GEMM = gemm.MKL_GEMMS  # the MKL side calls MKL whatever the CPU

    def by_mkl(a, b, out):
        gemm.MKL_MIN_MACS, gemm.MKL_MIN_SIDE = 0, 1  # MKL, however small the product
        gemm.matmul(a, b, out)

    for title, (m, k, n, b_transposed) in cases.items():
        a, b, out = product_operands(m, k, n, b_transposed)
        mkl_way = ("MKL", partial(by_mkl, a, b, out))
        numpy_way = ("NumPy (OpenBLAS)", partial(np.matmul, a, b, out=out))
        gemm.MKL_MIN_MACS, gemm.MKL_MIN_SIDE = defaults
        mkl_first = uses_mkl and gemm.mkl_wins(m, k, n)
        ours, theirs = (mkl_way, numpy_way) if mkl_first else (numpy_way, mkl_way)
        compare(title, (f"{ours[0]} (cnn_core)", ours[1]), theirs)
    gemm.MKL_MIN_MACS, gemm.MKL_MIN_SIDE = defaults
    gemm._GEMM = chosen


# Section 8's products, the VGG convs' im2col blocks, (F, C*9) @ (C*9, block columns), and
# LeNet-5's first conv by column groups (a block of 7 output rows)
OPENBLAS_CASES = {
    **{f"10{title[1:]}": case for title, case in GEMM_CASES.items()},
    "10p. vgg32 32 -> 32 im2col block, (32, 288) @ (288, 2048)": (32, 288, 2048, False),
    "10q. vgg32 64 -> 64 im2col block, (64, 576) @ (576, 1024)": (64, 576, 1024, False),
    "10r. vgg32 32 -> 32 dW, (288, 2048) @ (2048, 32)": (288, 2048, 32, True),
    "10s. LeNet-5 first conv by column groups, (24, 40) @ (40, 3136)": (24, 40, 3136, False),
    "10t. LeNet-5 first conv dW by column groups, (40, 3136) @ (3136, 24)": (40, 3136, 24, True),
}


def openblas_kernels(cases):
    """Section 10: each product by OpenBLAS's Haswell kernels, then by its SkylakeX ones."""
    chosen = gemm.openblas_core()
    current = [chosen]  # kept here: asking OpenBLAS at every call would be timed with it

    def under(core, a, b, out):
        def run():
            if current[0] != core:
                current[0] = gemm.use_openblas_core(core)
                assert current[0] == core, f"OpenBLAS did not switch to {core}"
            np.matmul(a, b, out=out)

        return run

    for title, (m, k, n, b_transposed) in cases.items():
        a, b, out = product_operands(m, k, n, b_transposed)
        ours = ("OpenBLAS, Haswell kernels (cnn_core)", under("Haswell", a, b, out))
        compare(title, ours, ("OpenBLAS, SkylakeX kernels", under("SkylakeX", a, b, out)))
    gemm.use_openblas_core(chosen)


def shards_or_blas_threads():
    """Section 6: vgg32 on 2 threads, shard processes against BLAS threads."""
    config, X, y = workload("vgg32")
    net = Network.from_config(config, seed=0)
    ways = {"2 shard processes, 1 BLAS thread each (cnn_core)": 2, "1 process, 2 BLAS threads": 1}
    times = {way: [] for way in ways}
    with threadpool_limits(2):
        for _ in range(3):
            for way, shards in ways.items():
                start = time.perf_counter()
                net.fit(X, y, epochs=1, batch_size=BATCH, threads=shards)
                times[way].append(time.perf_counter() - start)
    (ours, a), (theirs, b) = ((way, statistics.median(t)) for way, t in times.items())
    print(
        f"6. training vgg32 ({len(X)} images), 2 threads\n  {ours:<44} {len(X) / a:7.0f} img/s\n"
        f"  {theirs:<44} {len(X) / b:7.0f} img/s   ({b / a:.2f}x cnn_core's time)"
    )


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
    shards_or_blas_threads()
