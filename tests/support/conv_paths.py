"""What the tests of the convolution paths (window rows, Winograd, column groups) share:
running a conv two ways, comparing the results, and checking a path against PyTorch."""

import numpy as np
import pytest

from cnn_core import functional as F


def two_ways(monkeypatch, setting, values, cache_type, x, w, b, padding, need_dx=True):
    """(out, dx, dw, db) with ``F.<setting>`` at each of two ``values``, the second of which
    makes conv_forward return a ``cache_type``, for the same inputs and dout; each way runs
    twice on one workspace, as training steps do, and the second step is returned."""
    results = []
    for value in values:
        monkeypatch.setattr(F, setting, value)
        ws = F.Workspace()
        for step in range(2):
            xs = x * (step + 1)
            out, cache = F.conv_forward(xs, w, b, (1, 1), padding, ws)
            assert isinstance(cache, cache_type) == (value == values[1])
            dout = np.random.default_rng(step).standard_normal(out.shape).astype(x.dtype)
            grads = F.conv_backward(dout, cache, need_dx)
        results.append([out.copy(), *(None if g is None else g.copy() for g in grads)])
    return results


def assert_all_close(ours, references, tolerance):
    """Each of (out, dx, dw, db) equal to its reference within ``tolerance`` (relative and
    absolute), with its shape; a dx of None where the reference's is None."""
    for mine, reference in zip(ours, references, strict=True):
        if reference is None:
            assert mine is None
            continue
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=tolerance, atol=tolerance)


def assert_conv_matches_torch(kernel):
    """Forward and all three gradients of a 3 -> 4 channel stride-1 conv with padding 1, by
    whatever path conv_forward takes, against torch.nn.functional.conv2d in float64, to the
    parity tests' tolerance."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 10))  # (N, C, H, W)
    w, b = rng.standard_normal((4, 3, *kernel)), rng.standard_normal(4)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    out_t = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
    dout = rng.standard_normal(out_t.shape)
    out_t.backward(torch.from_numpy(dout))
    out, cache = F.conv_forward(
        np.ascontiguousarray(x.transpose(1, 2, 3, 0)), w, b, (1, 1), (1,) * 4
    )
    dx, dw, db = F.conv_backward(np.ascontiguousarray(dout.transpose(1, 2, 3, 0)), cache)
    ours = (out.transpose(3, 0, 1, 2), dx.transpose(3, 0, 1, 2), dw, db)  # back to (N, C, H, W)
    for mine, theirs in zip(ours, (out_t, xt.grad, wt.grad, bt.grad), strict=True):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-9, atol=1e-11)
    return cache
