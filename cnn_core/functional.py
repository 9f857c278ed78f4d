"""Vectorized kernels: every layer's forward and backward pass as pure functions.

Internal layout. Feature maps are (C, H, W, N) and dense activations are (D, N): the batch is the
innermost axis, as in the seed notebook. With N innermost, every window of an image is a run of
contiguous rows, so building the im2col matrix is a fast strided copy and the convolution output
of ``W @ cols`` already has the layout the next layer wants, with no transpose. Flattening
(C, H, W, N) to (C*H*W, N) keeps PyTorch's (C, H, W) feature order. The public API converts from
and to (N, C, H, W) once at the boundary.

Conventions.
- Padding is (top, bottom, left, right); stride is (sh, sw).
- Output size: ``Ho = (H + top + bottom - kh) // sh + 1`` (and likewise for W).
- Max pooling sends the gradient to the first maximum of each window in row-major order (PyTorch
  does the same), so ties never double a gradient.
- Loops run over kernel offsets only (kh * kw iterations), never over samples, pixels or
  channels: a strided slice per offset is cheaper than any fancy-indexed scatter.
- Every function keeps the dtype of its inputs.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import gemm
from .activations import LEAKY_RELU_SLOPE


def output_size(size, kernel, stride, pad_before, pad_after):
    """Length of a conv or pooling output along one axis."""
    return (size + pad_before + pad_after - kernel) // stride + 1


class Workspace:
    """Scratch arrays reused from one training step to the next, one per name.

    Training allocates the same multi-megabyte temporaries (im2col columns, padded maps) at
    every step; fresh allocations that large are mapped and unmapped each time and cost a page
    fault per 4 KiB on first touch. Each layer object owns one workspace, used only in
    training (each shard process builds its own layers) and living as long as its network; a
    prediction's convolution gets one for the call alone, shared by its blocks, so concurrent
    predictions never share memory.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype, zeroed=False):
        """An array of this shape and dtype, reused when the last one under ``name`` fits.

        ``zeroed=True`` promises zeros only on creation; callers keep what must stay zero.
        """
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = (np.zeros if zeroed else np.empty)(shape, dtype)
        return a


def _array(ws, name, shape, dtype, zeroed=False):
    if ws is None:
        return (np.zeros if zeroed else np.empty)(shape, dtype)
    return ws.get(name, shape, dtype, zeroed)


def _block_array(ws, name, shape, dtype, capacity):
    """A ``shape`` view of the first elements of the flat workspace buffer ``name`` of
    ``capacity`` elements: the blocks of one pass differ only in their last block's size, so
    one buffer serves them all."""
    buffer = _array(ws, name, (capacity,), dtype)
    return buffer[: math.prod(shape)].reshape(shape)


def pad_maps(x, padding, ws=None, name="padded"):
    """Zero-pad (C, H, W, N) maps by (top, bottom, left, right)."""
    top, bottom, left, right = padding
    if not (top or bottom or left or right):
        return x
    c, h, w, n = x.shape
    xp = _array(ws, name, (c, h + top + bottom, w + left + right, n), x.dtype, zeroed=True)
    xp[:, top : top + h, left : left + w, :] = x  # the border is never written, so stays zero
    return xp


def unpad_maps(x, padding):
    """Inverse of :func:`pad_maps`: a view of the unpadded centre."""
    top, bottom, left, right = padding
    _, h, w, _ = x.shape
    return x[:, top : h - bottom, left : w - right, :]


def _offset_slices(kh, kw, out_h, out_w, stride):
    """For each kernel offset (i, j): the strided slices of the input it touches."""
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            yield (
                i,
                j,
                slice(i, i + sh * (out_h - 1) + 1, sh),
                slice(j, j + sw * (out_w - 1) + 1, sw),
            )


# ----------------------------------------------------------------------------------- convolution


COLUMN_BLOCK_BYTES = 512 * 1024  # im2col built a block of output rows at a time, to stay in cache


def _block_rows(windows):
    """Output rows in one im2col block: as many as fit in COLUMN_BLOCK_BYTES (at least one)."""
    c, _, out_w, n, kh, kw = windows.shape
    return max(1, COLUMN_BLOCK_BYTES // (c * kh * kw * out_w * n * windows.itemsize))


def _row_blocks(windows):
    """Output-row ranges (r0, r1) whose im2col block fits in COLUMN_BLOCK_BYTES."""
    out_h, rows = windows.shape[1], _block_rows(windows)
    for r0 in range(0, out_h, rows):
        yield r0, min(r0 + rows, out_h)


def _columns(windows, r0, r1, ws, name="columns"):
    """The im2col block of output rows r0:r1: (C*kh*kw, (r1-r0)*Wo*N), batch innermost."""
    c, _, out_w, n, kh, kw = windows.shape
    capacity = c * kh * kw * _block_rows(windows) * out_w * n
    block = _block_array(ws, name, (c, kh, kw, r1 - r0, out_w, n), windows.dtype, capacity)
    np.copyto(block, windows[:, r0:r1].transpose(0, 4, 5, 1, 2, 3))
    return block.reshape(c * kh * kw, -1)


def _windows(xp, kernel, stride):
    """(C, Ho, Wo, N, kh, kw) view of every window of padded maps (no copy)."""
    return sliding_window_view(xp, kernel, axis=(1, 2))[:, :: stride[0], :: stride[1]]


def _correlate(xp, w, stride, ws, name):
    """``w`` (F, C, kh, kw) cross-correlated with padded maps xp (C, Hp, Wp, N), no bias:
    (F, Ho, Wo, N), written into the workspace array ``name`` (its im2col blocks as well)."""
    f, _, kh, kw = w.shape
    windows = _windows(xp, (kh, kw), stride)
    _, out_h, out_w, n, _, _ = windows.shape
    out = _array(ws, name, (f, out_h, out_w, n), xp.dtype)
    w2 = w.reshape(f, -1)
    for r0, r1 in _row_blocks(windows):
        gemm.matmul(w2, _columns(windows, r0, r1, ws), out=out[:, r0:r1].reshape(f, -1))
    return out


# --------------------------------------------------------------------------------- column groups
#
# A convolution of few filters (LeNet-5's first: 6) makes im2col products of as few rows, which
# GEMM runs far below its peak. Grouped by COLUMN_GROUP = B consecutive output columns, the
# windows of a group share B + kw - 1 input columns: one window (C, kh, B + kw - 1) per group,
# and the kernel as a band (B*F, C*kh*(B + kw - 1)) whose row (o, f) holds w[f] shifted by o
# columns. The product then has B times the rows, its copy is (B + kw - 1) / (B * kw) of
# im2col's (2/5 for 5x5 kernels) and its multiplications (B + kw - 1) / kw as many (the band's
# zeros: 1.6x for 5x5). Its rows come out by column offset, (o, f); the pass that adds the bias
# puts them in place. Where the band's zeros cost more than the fatter product gains (3x3
# kernels, 16 filters), im2col measured as fast or faster, and on small batches, where the
# extra steps count for more than the products (benchmarks/kernel_variants.py, 9).
COLUMN_GROUP = 4
COLUMN_GROUPS_MAX_FILTERS = 8
COLUMN_GROUPS_MIN_WIDTH = 5  # kw
COLUMN_GROUPS_MIN_BATCH = 32  # a 2-thread fit's shard of a batch of 64


def _uses_column_groups(w_shape, stride, batch):
    f, _, _, kw = w_shape
    return (
        tuple(stride) == (1, 1)
        and f <= COLUMN_GROUPS_MAX_FILTERS
        and kw >= COLUMN_GROUPS_MIN_WIDTH
        and batch >= COLUMN_GROUPS_MIN_BATCH
    )


class ColumnGroupsCache:
    """What :func:`conv_backward` needs of a conv by column groups: the input padded to whole
    groups (``extra`` zero columns on the right beyond ``padding``), the kernel, the padding,
    the workspace, and the shapes of the input and of the input padded by ``padding``."""

    def __init__(self, xp, w, padding, extra, x_shape, ws):
        self.xp, self.w, self.padding, self.ws, self.x_shape = xp, w, padding, ws, x_shape
        c, hp, wp, n = xp.shape
        self.padded_shape = c, hp, wp - extra, n


def _group_windows(xp, kh, kw):
    """(C, Ho, G, N, kh, B + kw - 1) view of the window of each group of output columns, the
    layout of :func:`_windows`, so that :func:`_columns` copies its blocks."""
    span = COLUMN_GROUP + kw - 1
    return sliding_window_view(xp, (kh, span), axis=(1, 2))[:, :, ::COLUMN_GROUP]


def _banded_kernel(w):
    """(F, C, kh, kw) -> (B*F, C*kh*(B + kw - 1)): row (o, f) is w[f] shifted by o columns."""
    f, c, kh, kw = w.shape
    band = np.zeros((COLUMN_GROUP, f, c, kh, COLUMN_GROUP + kw - 1), w.dtype)
    for o in range(COLUMN_GROUP):
        band[o, :, :, :, o : o + kw] = w
    return band.reshape(COLUMN_GROUP * f, -1)


def _group_pairs(grouped, columns):
    """Pairs of views of a (F, rows, G, B, N) array of groups and of the (F, rows, Wo, N)
    columns it stands for: the whole groups, then the last group's columns within Wo."""
    f, rows, out_w, n = columns.shape
    whole, rest = divmod(out_w, COLUMN_GROUP)
    head = columns[:, :, : whole * COLUMN_GROUP].reshape(f, rows, whole, COLUMN_GROUP, n)
    yield grouped[:, :, :whole], head
    if rest:
        yield grouped[:, :, whole, :rest], columns[:, :, whole * COLUMN_GROUP :]


def _correlate_by_column_groups(x, w, b, padding, ws):
    """:func:`conv_forward` of a stride-1 convolution by column groups, bias included."""
    f, c, kh, kw = w.shape
    top, bottom, left, right = padding
    n = x.shape[3]
    out_w = output_size(x.shape[2], kw, 1, left, right)
    groups = -(-out_w // COLUMN_GROUP)
    extra = groups * COLUMN_GROUP - out_w
    xp = pad_maps(x, (top, bottom, left, right + extra), ws)
    windows = _group_windows(xp, kh, kw)
    out_h = windows.shape[1]
    out = _array(ws, "out", (f, out_h, out_w, n), x.dtype)
    band = _banded_kernel(w)
    capacity = band.shape[0] * _block_rows(windows) * groups * n
    for r0, r1 in _row_blocks(windows):
        shape = (COLUMN_GROUP, f, r1 - r0, groups, n)
        product = _block_array(ws, "group_product", shape, x.dtype, capacity)
        gemm.matmul(band, _columns(windows, r0, r1, ws), out=product.reshape(band.shape[0], -1))
        grouped = product.transpose(1, 2, 3, 0, 4)  # (F, rows, G, B, N)
        for part, columns in _group_pairs(grouped, out[:, r0:r1]):
            np.add(part, b.reshape((f,) + (1,) * (part.ndim - 1)), out=columns)
    return out, ColumnGroupsCache(xp, w, padding, extra, x.shape, ws)


def _weight_gradient_by_column_groups(dout, cache):
    """dW of a conv by column groups: per block of output rows, its windows (C*kh*(B+kw-1),
    rows*G*N) @ dout's block grouped as the forward product's rows (rows*G*N, B*F), summed,
    then each column offset's share of the band folded back into the kernel."""
    xp, ws = cache.xp, cache.ws
    f, c, kh, kw = cache.w.shape
    n, out_w = xp.shape[3], dout.shape[2]
    windows = _group_windows(xp, kh, kw)
    groups, span = windows.shape[2], windows.shape[5]
    capacity = COLUMN_GROUP * f * _block_rows(windows) * groups * n
    g = np.zeros((c * kh * span, COLUMN_GROUP * f), dtype=dout.dtype)
    for r0, r1 in _row_blocks(windows):
        shape = (COLUMN_GROUP, f, r1 - r0, groups, n)
        grouped = _block_array(ws, "group_dout", shape, dout.dtype, capacity)
        if out_w % COLUMN_GROUP:
            grouped[:, :, :, -1] = 0  # the last group's columns beyond the output
        for part, columns in _group_pairs(grouped.transpose(1, 2, 3, 0, 4), dout[:, r0:r1]):
            np.copyto(part, columns)
        columns = _columns(windows, r0, r1, ws)
        gemm.matmul(columns, grouped.reshape(COLUMN_GROUP * f, -1).T, out=g, accumulate=True)
    band = g.reshape(c, kh, span, COLUMN_GROUP, f)
    dw = sum(band[:, :, o : o + kw, o] for o in range(COLUMN_GROUP))  # (C, kh, kw, F)
    return np.ascontiguousarray(dw.transpose(3, 0, 1, 2))


# ------------------------------------------------------------------------ window-row products
#
# A stride-1 convolution whose kernel columns are deep (kh * C values) runs on "window rows":
# the padded input rows, stored (Hp, C, Wp, N). Output row r needs padded rows r..r+kh-1,
# consecutive blocks of that array: a (kh*C, Wp*N) matrix whose columns j*N .. (j + Wo)*N are
# the windows at horizontal kernel offset j, a strided view. So output row r is kw products
# (F, kh*C) @ view, added up, with the kernel as (kw, F, kh*C). The copy is that of padding the
# input, kh*kw times smaller than im2col's, the rows the products read fit in cache, and the
# products are im2col's split by horizontal offset: same sums, in another order. (One product
# of depth kh*C*kw over the kw horizontal windows copied side by side measured 1.1-1.5x this
# time: the copies cost more than the fatter product gains; a throwaway comparison.)

# Below these, im2col's single product per block measured faster (benchmarks/kernel_variants.py,
# section 7): few channels make thin products, a small batch short ones.
WINDOW_ROWS_MIN_DEPTH = 48  # kh * C
WINDOW_ROWS_MIN_BATCH = 16
# The padded rows kept at a time, but at least kh slots: with fewer, the moves to the front
# cost more than the copies.
WINDOW_ROWS_BUFFER_BYTES = 8 * 1024 * 1024


def _uses_window_rows(w_shape, stride, batch):
    _, c, kh, _ = w_shape
    return (
        tuple(stride) == (1, 1)
        and c * kh >= WINDOW_ROWS_MIN_DEPTH
        and batch >= WINDOW_ROWS_MIN_BATCH
    )


def _window_rows(x, padding, kh, ws, name):
    """For each output row r of a stride-1 conv with kh kernel rows of maps x (C, H, W, N)
    padded by ``padding``: (r, padded rows r..r+kh-1 as one (kh*C, Wp*N) matrix), a view.

    Each padded row is copied just before the first output row that reads it, so the products
    find it in cache. The rows live in a buffer of ``slots`` rows plus kh - 1: when output row
    r reaches the end, the last kh - 1 rows move to the front. Padding rows and columns are
    zeroed in place, so the buffer can serve any padding.
    """
    top, bottom, left, right = padding
    c, h, width, n = x.shape
    out_h, padded_w = output_size(h, kh, 1, top, bottom), width + left + right
    per_row = c * padded_w * n * x.itemsize
    slots = min(out_h, max(kh, WINDOW_ROWS_BUFFER_BYTES // per_row - (kh - 1)))
    rows = _array(ws, name, (slots + kh - 1, c, padded_w, n), x.dtype)

    def fill(slot, p):
        q = p - top  # the input row of padded row p
        if not 0 <= q < h:
            rows[slot] = 0
            return
        np.copyto(rows[slot, :, left : left + width], x[:, q])
        rows[slot, :, :left] = 0
        rows[slot, :, left + width :] = 0

    matrices = rows.reshape(slots + kh - 1, c, -1)
    for p in range(kh - 1):
        fill(p, p)
    for r in range(out_h):
        slot = r % slots
        if slot == 0 and r:
            np.copyto(rows[: kh - 1], rows[slots:])
        fill(slot + kh - 1, r + kh - 1)
        yield r, matrices[slot : slot + kh].reshape(kh * c, -1)


def _kernel_offsets(w):
    """(F, C, kh, kw) -> (kw, F, kh*C): per horizontal offset, the depth order of window rows."""
    f, c, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(3, 0, 2, 1)).reshape(kw, f, kh * c)


def _offset_columns(rows, j, out_w, n):
    """The windows at horizontal kernel offset j of a (kh*C, Wp*N) window-rows matrix."""
    return rows[:, j * n : (j + out_w) * n]


class WindowRowsCache:
    """What :func:`conv_backward` needs of a conv by window rows: the unpadded input, the
    kernel, the padding and the workspace."""

    def __init__(self, x, w, padding, ws):
        self.x, self.w, self.padding, self.ws = x, w, padding, ws


def _correlate_by_window_rows(x, padding, w, ws, name, b=None):
    """:func:`_correlate` of maps x (C, H, W, N) padded by ``padding``, by window rows, into
    the workspace array ``name``, plus the bias ``b`` if given (the first term of each row)."""
    f, c, kh, kw = w.shape
    top, bottom, left, right = padding
    _, h, width, n = x.shape
    out_h, out_w = output_size(h, kh, 1, top, bottom), output_size(width, kw, 1, left, right)
    out = _array(ws, name, (f, out_h, out_w, n), x.dtype)
    out_rows = out.reshape(f, out_h, -1)
    offsets = _kernel_offsets(w)
    for r, rows in _window_rows(x, padding, kh, ws, name + "_window_rows"):
        row = out_rows[:, r]
        if b is not None:
            np.copyto(row, b[:, None])
        for j in range(kw):
            columns = _offset_columns(rows, j, out_w, n)
            gemm.matmul(offsets[j], columns, out=row, accumulate=b is not None or j > 0)
    return out


def _weight_gradient_by_window_rows(dout, x, padding, w_shape, ws):
    """dW (F, C, kh, kw) of a stride-1 conv from its window rows, rebuilt: per output row and
    horizontal offset, windows (kh*C, Wo*N) @ that row of dout (Wo*N, F), summed (the thin
    product runs faster this way round, as in :func:`_weight_gradient_by_im2col`)."""
    f, c, kh, kw = w_shape
    _, out_h, out_w, n = dout.shape
    dout_rows = dout.reshape(f, out_h, -1)
    g = np.zeros((kw, kh * c, f), dtype=dout.dtype)
    for r, rows in _window_rows(x, padding, kh, ws, "out_window_rows"):
        for j in range(kw):
            columns = _offset_columns(rows, j, out_w, n)
            gemm.matmul(columns, dout_rows[:, r].T, out=g[j], accumulate=True)
    return np.ascontiguousarray(g.reshape(kw, kh, c, f).transpose(3, 2, 1, 0))


def _gradients_by_window_rows(dout, x, w, padding, ws):
    """(dx, dW) of a stride-1 conv in one pass over the window rows of dout (padded, for dx as
    a correlation with the flipped kernel). The windows of dx row p at offset j, (kh*F, W*N),
    are also dout's values that meet input row p: ``windows @ x[:, p].T`` is their share of dW,
    in flipped order, computed while they are in cache and with no copy of x."""
    f, c, kh, kw = w.shape
    _, h, width, n = x.shape
    dout, pads, flipped = _input_gradient_correlation(dout, w, padding)
    dx = _array(ws, "dx", x.shape, x.dtype)
    dx_rows, x_rows = dx.reshape(c, h, -1), x.reshape(c, h, -1)
    offsets = _kernel_offsets(flipped)
    g = np.zeros((kw, kh * f, c), dtype=dout.dtype)
    for p, rows in _window_rows(dout, pads, kh, ws, "dx_window_rows"):
        for j in range(kw):
            columns = _offset_columns(rows, j, width, n)
            gemm.matmul(offsets[j], columns, out=dx_rows[:, p], accumulate=j > 0)
            gemm.matmul(columns, x_rows[:, p].T, out=g[j], accumulate=True)
    dw = g.reshape(kw, kh, f, c)[::-1, ::-1].transpose(2, 3, 1, 0)
    return dx, np.ascontiguousarray(dw)


def conv_forward(x, w, b, stride, padding, ws=None):
    """Convolution (cross-correlation, as in PyTorch).

    x: (C, H, W, N), w: (F, C, kh, kw), b: (F,) -> out: (F, Ho, Wo, N), cache.
    A 3x3 stride-1 convolution of at least WINOGRAD_MIN_CHANNELS input channels and a batch of
    at least WINOGRAD_MIN_BATCH runs as Winograd F(2x2, 3x3) (:func:`_winograd_forward`);
    another stride-1 one with deep kernel columns (kh * C) and a batch of at least
    WINDOW_ROWS_MIN_BATCH on window rows (:func:`_window_rows`); another stride-1 one of few
    filters and wide kernels, on a batch of at least COLUMN_GROUPS_MIN_BATCH, by column groups
    (:func:`_correlate_by_column_groups`); any other as im2col and a product, a block of output
    rows at a time, and backward rebuilds the blocks: a whole (C*kh*kw, Ho*Wo*N) matrix is
    megabytes that stream through memory twice, a block stays in cache between its copy and
    its product (measured 2x faster on LeNet-5's first layer).
    """
    # A prediction's blocks share scratch of its own: with fresh arrays per block, malloc gave
    # the heap back to the system at every call, and each call page-faulted it in again.
    ws = Workspace() if ws is None else ws
    if _uses_winograd(w.shape, stride, x.shape[3]):
        return _winograd_forward(x, w, b, padding, ws)
    if _uses_window_rows(w.shape, stride, x.shape[3]):
        out = _correlate_by_window_rows(x, padding, w, ws, "out", b)
        return out, WindowRowsCache(x, w, padding, ws)
    if _uses_column_groups(w.shape, stride, x.shape[3]):
        return _correlate_by_column_groups(x, w, b, padding, ws)
    xp = pad_maps(x, padding, ws)
    out = _correlate(xp, w, stride, ws, "out")
    out += b[:, None, None, None]
    return out, (xp, w, stride, padding, ws)


def conv_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv_forward`.

    dout: (F, Ho, Wo, N) -> dx: (C, H, W, N) or None, dw: (F, C, kh, kw), db: (F,).
    The first layer of a network passes ``need_dx=False``: nobody needs the gradient of the
    input, and it is the most expensive of the three.
    """
    if isinstance(cache, WinogradCache):
        return _winograd_backward(dout, cache, need_dx)
    db = dout.reshape(dout.shape[0], -1).sum(axis=1)
    if isinstance(cache, WindowRowsCache):
        x, w, padding, ws = cache.x, cache.w, cache.padding, cache.ws
        stride = (1, 1)
        by_correlation = _input_gradient_by_correlation_wins(x.shape, dout.shape, stride)
        flipped_shape = (w.shape[1], w.shape[0], *w.shape[2:])
        if need_dx and by_correlation and _uses_window_rows(flipped_shape, stride, x.shape[3]):
            return (*_gradients_by_window_rows(dout, x, w, padding, ws), db)
        dw = _weight_gradient_by_window_rows(dout, x, padding, w.shape, ws)
        c, h, width, n = x.shape
        padded_shape = (c, h + padding[0] + padding[1], width + padding[2] + padding[3], n)
    elif isinstance(cache, ColumnGroupsCache):
        w, stride, padding, ws = cache.w, (1, 1), cache.padding, cache.ws
        dw = _weight_gradient_by_column_groups(dout, cache)
        padded_shape, x_shape = cache.padded_shape, cache.x_shape
        by_correlation = _input_gradient_by_correlation_wins(x_shape, dout.shape, stride)
    else:
        xp, w, stride, padding, ws = cache
        dw = _weight_gradient_by_im2col(dout, xp, w.shape, stride, ws)
        padded_shape = xp.shape
        x_shape = unpad_maps(xp, padding).shape
        by_correlation = _input_gradient_by_correlation_wins(x_shape, dout.shape, stride)
    if not need_dx:
        return None, dw, db
    if by_correlation:
        return _input_gradient_by_correlation(dout, w, padding, ws), dw, db
    return _input_gradient_by_offsets(dout, w, padded_shape, stride, padding, ws), dw, db


def _input_gradient_by_correlation_wins(x_shape, dout_shape, stride):
    input_area, out_area = x_shape[1] * x_shape[2], dout_shape[1] * dout_shape[2]
    return tuple(stride) == (1, 1) and input_area <= CORRELATION_MAX_AREA_RATIO * out_area


def _weight_gradient_by_im2col(dout, xp, w_shape, stride, ws):
    """dW (F, C, kh, kw) from the im2col blocks of the padded input, rebuilt."""
    f, c, kh, kw = w_shape
    windows = _windows(xp, (kh, kw), stride)
    dw = np.zeros((c * kh * kw, f), dtype=dout.dtype)
    for r0, r1 in _row_blocks(windows):
        # (cols @ d2.T), transposed at the end: the thin product runs faster this way round
        columns = _columns(windows, r0, r1, ws)
        gemm.matmul(columns, dout[:, r0:r1].reshape(f, -1).T, out=dw, accumulate=True)
    return dw.T.reshape(w_shape)


# The correlation computes dx over the whole input and the per-offset products over the
# output: it wins when the two are about as large ("same" padding), loses on a small "valid"
# map (LeNet-5's second conv: 14x14 input, 10x10 output, 0.55x; kernel_variants.py 3c-3e).
CORRELATION_MAX_AREA_RATIO = 1.2


def _input_gradient_by_correlation(dout, w, padding, ws):
    """dx of a stride-1 convolution as one more convolution: ``dout`` padded by kernel - 1
    (less the forward padding) correlated with the kernel flipped and its channel axes swapped.

    One fat product of depth F*kh*kw per block of rows, as in forward, instead of kh*kw thin
    products of depth F each added over the whole input (benchmarks/kernel_variants.py, 3c).
    """
    dout, pads, flipped = _input_gradient_correlation(dout, w, padding)
    if _uses_window_rows(flipped.shape, (1, 1), dout.shape[3]):
        return _correlate_by_window_rows(dout, pads, flipped, ws, "dx")
    return _correlate(pad_maps(dout, pads, ws, "dout_padded"), flipped, (1, 1), ws, "dx")


def _input_gradient_correlation(dout, w, padding):
    """The operands of dx as a correlation: (dout cropped, the padding it needs, the kernel
    flipped with its channel axes swapped (C, F, kh, kw))."""
    _, _, kh, kw = w.shape
    top, bottom, left, right = padding
    # Padding the forward pass added beyond kernel - 1 is never reached by any window's
    # gradient: crop those rows of dout instead of padding by a negative amount.
    pads = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
    crop = [max(0, -p) for p in pads]
    dout = dout[:, crop[0] : dout.shape[1] - crop[1], crop[2] : dout.shape[2] - crop[3], :]
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return dout, tuple(max(0, p) for p in pads), flipped


# The products' output per block of _input_gradient_by_offsets, kh*kw times a block of dx:
# small blocks make short products (at 512 KB, one output row of LeNet-5's second convolution,
# that layer's backward took 1.36x the time it takes with 4 MB, all ten rows: kernel_variants.py
# 3g, AMD EPYC).
INPUT_GRADIENT_BLOCK_BYTES = 4 * 1024 * 1024


def _input_gradient_by_offsets(dout, w, padded_shape, stride, padding, ws):
    """dx of a strided convolution: per block of output rows, one product (kh*kw*C, F) @
    dout's block for every kernel offset at once, each offset's share then added into place.

    Why one product for all offsets: the products then have kh*kw*C rows instead of C
    (LeNet-5's second convolution: 150 instead of 6). One product per offset, each added while
    in cache (this function before), made that layer's backward take 1.32x the time
    (kernel_variants.py, 3f; AMD EPYC, OpenBLAS; 1.16x in a later run).
    """
    f, c, kh, kw = w.shape
    _, out_h, out_w, n = dout.shape
    w_all = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * c, f)
    row_size = kh * kw * c * out_w * n  # of the product's output, per output row
    block = max(1, INPUT_GRADIENT_BLOCK_BYTES // (row_size * dout.itemsize))
    dxp = _array(ws, "dpadded", padded_shape, dout.dtype)
    dxp.fill(0)
    for r0 in range(0, out_h, block):
        r1 = min(r0 + block, out_h)
        shape = (kh * kw * c, (r1 - r0) * out_w * n)
        part = _block_array(ws, "dx_part", shape, dout.dtype, block * row_size)
        gemm.matmul(w_all, dout[:, r0:r1].reshape(f, -1), out=part)
        shares = part.reshape(kh, kw, c, r1 - r0, out_w, n)
        block_dxp = dxp[:, stride[0] * r0 :]  # where output row r0's windows start
        for i, j, rows, columns in _offset_slices(kh, kw, r1 - r0, out_w, stride):
            block_dxp[:, rows, columns, :] += shares[i, j]
    return unpad_maps(dxp, padding)


# -------------------------------------------------------------------- Winograd F(2x2, 3x3)
#
# Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2015). Each 2x2 tile of
# output is ``A^T [(G g G^T) * (B^T d B)] A`` for its 4x4 input tile d (tiles overlap by 2) and
# the 3x3 kernel g: per tile and channel pair 16 multiplications instead of 36, as 16 products
# (F, C) @ (C, tiles*N), one per position of the 4x4 transformed tile, in one batched matmul.
# The transforms are additions over strided views (B and A hold only 0 and +-1, G halves), so
# float32 results differ from im2col's by rounding only (~1e-6 relative). Backward runs the
# same products transposed: dW from the transformed dout and input tiles, dx through the
# adjoints of the transforms. Tiles go a block of tile rows at a time so that the transformed
# arrays (4x the input each) stay in cache; backward rebuilds the input tiles of each block.

# The transforms cost per channel, the products gain per channel pair: from 128 input channels
# Winograd beats window rows or ties, on 64 they win (64 -> 128 excepted, by a little), and
# below a batch of 16 im2col's one product per block beats Winograd (benchmarks/
# kernel_variants.py, sections 7 and 5). Blocks of 0.5 to 2 MB of transformed tiles measured
# alike, 8 MB slower.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_BATCH = 16
WINOGRAD_BLOCK_BYTES = 2 * 1024 * 1024  # the transformed input tiles of one block of tile rows

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
# G w G^T of every (filter, channel) pair as one product: row 4a + b of kron(G, G) weighs the
# kernel's nine taps into U[a, b]. Stacked (4, 3) @ (3, 3) @ (3, 4) products cost NumPy a
# loop step per pair.
_KERNEL_TRANSFORM = np.kron(_G, _G)


def _uses_winograd(w_shape, stride, batch):
    _, c, kh, kw = w_shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and c >= WINOGRAD_MIN_CHANNELS
        and batch >= WINOGRAD_MIN_BATCH
    )


class WinogradCache:
    """What :func:`_winograd_backward` needs: the padded input (made even-sized), the
    transformed kernel U (16, F, C), the kernel, the input's shape and the forward padding."""

    def __init__(self, xp, u, w, x_shape, padding, ws):
        self.xp, self.u, self.w, self.ws = xp, u, w, ws
        self.x_shape, self.padding = x_shape, padding


def _input_transform(d0, d1, d2, d3, out):
    """B^T along one axis of four tile rows (or columns) d0..d3 of the input: out[0..3]."""
    np.subtract(d0, d2, out=out[0])
    np.add(d1, d2, out=out[1])
    np.subtract(d2, d1, out=out[2])
    np.subtract(d1, d3, out=out[3])


def _input_transform_adjoint(dv, out, axis, scratch):
    """Add B (the adjoint of :func:`_input_transform`) of dv[0..3] (T tiles along ``axis``)
    into ``out`` (2T + 2 along ``axis``): tile t covers positions 2t..2t+3."""
    t = dv[0].shape[axis]

    def every_other(start):
        index = [slice(None)] * out.ndim
        index[axis] = slice(start, start + 2 * t - 1, 2)
        return out[tuple(index)]

    every_other(0)[...] += dv[0]
    np.subtract(dv[1], dv[2], out=scratch)
    scratch += dv[3]
    every_other(1)[...] += scratch
    np.add(dv[1], dv[2], out=scratch)
    scratch -= dv[0]
    every_other(2)[...] += scratch
    every_other(3)[...] -= dv[3]


def _output_transform(m, out0, out1):
    """A^T along one axis of four transformed rows m[0..3]: the two output rows."""
    np.add(m[0], m[1], out=out0)
    out0 += m[2]
    np.subtract(m[1], m[2], out=out1)
    out1 -= m[3]


def _output_transform_adjoint(g0, g1, out):
    """A (the adjoint of :func:`_output_transform`) of two output rows g0, g1: out[0..3]."""
    np.copyto(out[0], g0)
    np.add(g0, g1, out=out[1])
    np.subtract(g0, g1, out=out[2])
    np.negative(g1, out=out[3])


class _TileBlocks:
    """The blocks of tile rows of padded, even-sized maps (C, 2*Th + 2, 2*Tw + 2, N), each
    small enough that its transformed input tiles fit in WINOGRAD_BLOCK_BYTES, and the
    workspace buffers of a block (one per name, sized for the largest block)."""

    def __init__(self, xp, ws):
        self.c, hp, wp, self.n = xp.shape
        self.tile_rows, self.tile_columns = (hp - 2) // 2, (wp - 2) // 2
        per_row = 16 * self.c * self.tile_columns * self.n * xp.itemsize
        self.rows = max(1, min(self.tile_rows, WINOGRAD_BLOCK_BYTES // per_row))
        self.xp, self.ws = xp, ws

    def __iter__(self):
        for t0 in range(0, self.tile_rows, self.rows):
            yield t0, min(t0 + self.rows, self.tile_rows)

    def array(self, name, shape, rows_axis):
        """Scratch of ``shape`` whose axis ``rows_axis`` counts this block's tile rows."""
        capacity = int(np.prod(shape)) // shape[rows_axis] * self.rows
        return _block_array(self.ws, name, shape, self.xp.dtype, capacity)

    def input_tiles(self, t0, t1):
        """B^T d B of the input tiles of tile rows t0:t1: (16, C, (t1 - t0) * Tw * N)."""
        c, n, rows, tile_columns = self.c, self.n, t1 - t0, self.tile_columns
        xp = self.xp
        across = self.array("winograd_rows", (4, c, rows, xp.shape[2], n), 2)
        _input_transform(*(xp[:, 2 * t0 + k : 2 * t1 + k : 2] for k in range(4)), across)
        v = self.array("winograd_v", (4, 4, c, rows, tile_columns, n), 3)
        for a in range(4):
            _input_transform(
                *(across[a][:, :, k : k + 2 * tile_columns : 2] for k in range(4)), v[a]
            )
        return v.reshape(16, c, -1)


def _winograd_forward(x, w, b, padding, ws):
    """:func:`conv_forward` of a 3x3 stride-1 convolution by Winograd F(2x2, 3x3).

    An odd output size gets one more row (column) of zero padding at the bottom (right), so
    that tiles cover it, and is cropped afterwards.
    """
    f, c, _, _ = w.shape
    top, bottom, left, right = padding
    out_h, out_w = x.shape[1] + top + bottom - 2, x.shape[2] + left + right - 2
    xp = pad_maps(x, (top, bottom + out_h % 2, left, right + out_w % 2), ws)
    transform = _KERNEL_TRANSFORM.astype(w.dtype)
    u = gemm.matmul(transform, w.reshape(f * c, 9).T).reshape(16, f, c)
    _, hp, wp, n = xp.shape
    out = _array(ws, "out", (f, hp - 2, wp - 2, n), x.dtype)
    blocks = _TileBlocks(xp, ws)
    for t0, t1 in blocks:
        shape = (4, 4, f, t1 - t0, blocks.tile_columns, n)
        m = blocks.array("winograd_m", shape, 3)
        gemm.matmul(u, blocks.input_tiles(t0, t1), out=m.reshape(16, f, -1))
        down = blocks.array("winograd_down", (2, *shape[1:]), 3)
        for col in range(4):
            _output_transform(m[:, col], down[0, col], down[1, col])
        block = out[:, 2 * t0 : 2 * t1]
        for i in range(2):
            _output_transform(down[i], block[:, i::2, 0::2], block[:, i::2, 1::2])
    out += b[:, None, None, None]
    return out[:, :out_h, :out_w], WinogradCache(xp, u, w, x.shape, padding, ws)


def _winograd_backward(dout, cache, need_dx):
    """:func:`conv_backward` of :func:`_winograd_forward`. Per block of tile rows: dout's
    tiles through the adjoint of the output transform give dM (16, F, tiles*N); then
    dU += dM @ V^T (dW = G^T dU G at the end) and dV = U^T @ dM, whose input-transform
    adjoint is added into dx."""
    xp, u, w, ws = cache.xp, cache.u, cache.w, cache.ws
    f, c, _, _ = w.shape
    _, hp, wp, n = xp.shape
    db = dout.sum(axis=(1, 2, 3))
    if dout.shape[1:3] != (hp - 2, wp - 2):
        grown = _array(ws, "winograd_dout", (f, hp - 2, wp - 2, n), dout.dtype, zeroed=True)
        grown[:, : dout.shape[1], : dout.shape[2]] = dout  # the extra row and column stay zero
        dout = grown
    du = np.zeros((16, f, c), dtype=dout.dtype)
    if need_dx:
        dxp = _array(ws, "dpadded", xp.shape, dout.dtype)
        dxp.fill(0)
    blocks = _TileBlocks(xp, ws)
    for t0, t1 in blocks:
        rows = t1 - t0
        block = dout[:, 2 * t0 : 2 * t1]
        up = blocks.array("winograd_up", (2, 4, f, rows, blocks.tile_columns, n), 3)
        for i in range(2):
            _output_transform_adjoint(block[:, i::2, 0::2], block[:, i::2, 1::2], up[i])
        dm = blocks.array("winograd_m", (4, *up.shape[1:]), 3)
        for col in range(4):
            _output_transform_adjoint(up[0, col], up[1, col], dm[:, col])
        dm = dm.reshape(16, f, -1)
        gemm.matmul(dm, blocks.input_tiles(t0, t1).transpose(0, 2, 1), out=du, accumulate=True)
        if not need_dx:
            continue
        dv = blocks.array("winograd_dv", (4, 4, c, rows, blocks.tile_columns, n), 3)
        gemm.matmul(u.transpose(0, 2, 1), dm, out=dv.reshape(16, c, -1))
        across = blocks.array("winograd_rows", (4, c, rows, wp, n), 2)
        across.fill(0)
        scratch = blocks.array("winograd_scratch", dv.shape[2:], 1)
        for a in range(4):
            _input_transform_adjoint(dv[a], across[a], 2, scratch)
        scratch = blocks.array("winograd_scratch_rows", across.shape[1:], 1)
        _input_transform_adjoint(across, dxp[:, 2 * t0 : 2 * t1 + 2], 1, scratch)
    transform = _KERNEL_TRANSFORM.astype(dout.dtype)
    dw = gemm.matmul(du.reshape(16, f * c).T, transform).reshape(f, c, 3, 3)
    if not need_dx:
        return None, dw, db
    _, h, width, _ = cache.x_shape
    top, _, left, _ = cache.padding
    return dxp[:, top : top + h, left : left + width], dw, db


# --------------------------------------------------------------------------------------- pooling


def maxpool_forward(x, pool, stride):
    """Max pooling over (kh, kw) windows, overlapping or not. x: (C, H, W, N) -> (C, Ho, Wo, N)."""
    kh, kw = pool
    _, h, w, _ = x.shape
    out_h, out_w = output_size(h, kh, stride[0], 0, 0), output_size(w, kw, stride[1], 0, 0)
    out = None
    for _, _, rows, columns in _offset_slices(kh, kw, out_h, out_w, stride):
        window = x[:, rows, columns, :]
        out = window.copy() if out is None else np.maximum(out, window, out=out)
    return out, (x, out, pool, stride)


def maxpool_backward(dout, cache, ws=None):
    """Route each output gradient to the first maximum of its window."""
    x, out, (kh, kw), stride = cache
    _, out_h, out_w, _ = out.shape
    # Windows that tile the input exactly write each input once: no zero fill, no accumulation.
    tiles = (kh, kw) == tuple(stride) and x.shape[1:3] == (out_h * kh, out_w * kw)
    dx = _array(ws, "dx", x.shape, x.dtype)
    if not tiles:
        dx.fill(0)
    unclaimed = np.ones(out.shape, dtype=bool)
    winner = np.empty(out.shape, dtype=bool)
    for _, _, rows, columns in _offset_slices(kh, kw, out_h, out_w, stride):
        np.equal(x[:, rows, columns, :], out, out=winner)
        winner &= unclaimed
        unclaimed ^= winner
        if tiles:
            np.multiply(dout, winner, out=dx[:, rows, columns, :])
        else:
            dx[:, rows, columns, :] += dout * winner
    return dx


def avgpool_forward(x, pool, stride):
    """Average pooling over (kh, kw) windows. x: (C, H, W, N) -> (C, Ho, Wo, N)."""
    kh, kw = pool
    _, h, w, _ = x.shape
    out_h, out_w = output_size(h, kh, stride[0], 0, 0), output_size(w, kw, stride[1], 0, 0)
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), dtype=x.dtype)
    for _, _, rows, columns in _offset_slices(kh, kw, out_h, out_w, stride):
        out += x[:, rows, columns, :]
    out *= x.dtype.type(1.0 / (kh * kw))
    return out, (x.shape, pool, stride)


def avgpool_backward(dout, cache, ws=None):
    """Spread each output gradient evenly over its window."""
    shape, (kh, kw), stride = cache
    _, out_h, out_w, _ = dout.shape
    share = dout * dout.dtype.type(1.0 / (kh * kw))
    dx = _array(ws, "dx", shape, dout.dtype)
    dx.fill(0)
    for _, _, rows, columns in _offset_slices(kh, kw, out_h, out_w, stride):
        dx[:, rows, columns, :] += share
    return dx


# ----------------------------------------------------------------------------------------- dense


def dense_forward(a, w, b):
    """Affine map. a: (D, N), w: (U, D), b: (U,) -> z: (U, N)."""
    z = gemm.matmul(w, a)
    z += b[:, None]
    return z, (a, w)


def dense_backward(dz, cache, need_dx=True):
    """dz: (U, N) -> da: (D, N) or None, dw: (U, D), db: (U,)."""
    a, w = cache
    dw = gemm.matmul(dz, a.T)
    db = dz.sum(axis=1)
    return (gemm.matmul(w.T, dz) if need_dx else None), dw, db


# ----------------------------------------------------------------------------------- activations


def sigmoid(z):
    """Logistic function, stable for logits of any size (no overflow in exp)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def softmax(z):
    """Softmax over the class axis 0 of (K, N) logits."""
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def activation_forward(name, z):
    """Apply a hidden-layer activation to fresh pre-activations ``z`` (relu overwrites them);
    returns (a, cache). Output activations live in the loss."""
    if name == "relu":
        a = np.maximum(z, 0, out=z)
    elif name == "leaky_relu":
        a = np.maximum(z, z * z.dtype.type(LEAKY_RELU_SLOPE), out=z)
    elif name == "sigmoid":
        a = sigmoid(z)
    elif name == "tanh":
        a = np.tanh(z)
    elif name in ("linear", "softmax"):
        a = z
    else:
        raise ValueError(f"unknown activation {name!r}")
    return a, a


def activation_backward(name, da, a):
    """Gradient through an activation, written in terms of its output ``a``.

    May overwrite ``da``."""
    if name == "relu":
        return np.multiply(da, a > 0, out=da)
    if name == "leaky_relu":  # a has z's sign, as the slope is positive
        return np.multiply(da, np.where(a > 0, 1, a.dtype.type(LEAKY_RELU_SLOPE)), out=da)
    if name == "sigmoid":
        return da * a * (1 - a)
    if name == "tanh":
        return da * (1 - a * a)
    return da


# ---------------------------------------------------------------------------------------- losses


def softmax_cross_entropy(z, y):
    """Mean cross-entropy of (K, N) logits against (N,) integer labels.

    Returns (loss, dz) where dz = (softmax(z) - onehot(y)) / N, the fused gradient with respect
    to the logits. Uses log-sum-exp, so any finite logits give a finite loss.
    """
    n = z.shape[1]
    shifted = z - z.max(axis=0, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=0))
    columns = np.arange(n)
    loss = float(np.mean(log_norm - shifted[y, columns]))
    dz = np.exp(shifted - log_norm)
    dz[y, columns] -= 1
    dz *= dz.dtype.type(1.0 / n)
    return loss, dz


def binary_cross_entropy(z, y):
    """Mean binary cross-entropy of (1, N) logits against (N,) labels in {0, 1}.

    The seed's cost ``-(y log p + (1 - y) log(1 - p))`` rewritten on the logit as
    ``max(z, 0) - z*y + log(1 + exp(-|z|))``, which never overflows. dz = (sigmoid(z) - y) / N.
    """
    n = z.shape[1]
    t = y.astype(z.dtype)[None, :]
    loss = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))
    dz = (sigmoid(z) - t) * z.dtype.type(1.0 / n)
    return loss, dz


# ------------------------------------------------------------------------------ normalization


def batchnorm_forward(x, gamma, beta, epsilon, mean=None, var=None):
    """Batch normalization per channel of (C, H, W, N) maps or per unit of (D, N) vectors.

    With ``mean``/``var`` None (training) the statistics are the batch's, over every axis but
    the first: ``var`` is the biased variance, as PyTorch normalizes with. Otherwise (evaluation)
    the given running statistics are used, folded into one scale and shift per channel.
    Returns (out, cache, batch mean, batch var); the cache is what :func:`batchnorm_backward`
    needs (training only, None in evaluation).
    """
    c = x.shape[0]
    x2 = x.reshape(c, -1)
    if mean is not None:  # evaluation: one affine map per channel, two passes over x
        scale = (gamma / np.sqrt(var + epsilon)).astype(x.dtype, copy=False)
        out = x2 * scale[:, None]
        out += (beta - mean * scale)[:, None]
        return out.reshape(x.shape), None, mean, var
    mean = x2.mean(axis=1)
    normalized = x2 - mean[:, None]
    var = np.einsum("ij,ij->i", normalized, normalized) / x2.shape[1]
    inv_std = (1.0 / np.sqrt(var + epsilon)).astype(x.dtype, copy=False)
    normalized *= inv_std[:, None]
    out = normalized * gamma[:, None]
    out += beta[:, None]
    return out.reshape(x.shape), (normalized, inv_std, gamma), mean, var


def batchnorm_backward(dout, cache):
    """Gradients of :func:`batchnorm_forward` in training (through the batch statistics).

    dout: like x -> dx: like x, dgamma: (C,), dbeta: (C,); with M values per channel,
    ``dx = inv_std / M * (M * g - sum(g) - xhat * sum(g * xhat))`` for ``g = dout * gamma``.
    """
    normalized, inv_std, gamma = cache
    c, m = normalized.shape
    d2 = dout.reshape(c, m)
    dbeta = d2.sum(axis=1)
    dgamma = np.einsum("ij,ij->i", d2, normalized)
    dx = d2 - (dbeta / m)[:, None]
    dx -= normalized * (dgamma / m)[:, None]
    dx *= (gamma * inv_std)[:, None]
    return dx.reshape(dout.shape), dgamma, dbeta


# ------------------------------------------------------------------------------------ dropout


def dropout_mask(rng, rate, shape, rows, dtype):
    """The inverted-dropout multipliers for the samples ``rows`` (a slice) of a batch.

    ``rng`` (fresh, keyed by the step) draws uniforms sample-major, (sample, *shape), up to the
    shard's last sample: a prefix of the draw for the whole batch, so each shard cuts its rows
    from the same numbers and the masks do not depend on the shard count. A value is kept
    (multiplier ``1 / (1 - rate)``) when its uniform is at least ``rate``, else zeroed.
    Returns (*shape, len(rows)) in the batch-innermost layout.
    """
    uniforms = rng.random((rows.stop, *shape), dtype=np.float32)[rows]
    keep = np.moveaxis(uniforms >= np.float32(rate), 0, -1)
    return keep * dtype.type(1.0 / (1.0 - rate))


# ------------------------------------------------------------------------ global avg pooling


def global_avgpool_forward(x):
    """Mean of each map. x: (C, H, W, N) -> (C, N)."""
    return x.mean(axis=(1, 2)), x.shape


def global_avgpool_backward(dout, shape):
    """dout: (C, N) -> dx: (C, H, W, N), each map's gradient spread evenly."""
    _, h, w, _ = shape
    share = dout * dout.dtype.type(1.0 / (h * w))
    return np.broadcast_to(share[:, None, None, :], shape).copy()
