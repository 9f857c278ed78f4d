"""Checks and scaling shared by the format readers: labels, class names, sample shapes."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from cnn_core.errors import DatasetError, DatasetTooLarge

from .limits import _MAX_NAME_CHARS, MAX_CLASSES, MAX_IMAGE_PIXELS
from .sources import _fmt_bytes

_BYTE_SCALE = 1.0 / 255.0


def _scale_pixels(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 pixels times scale in float32, one correctly rounded multiply per value.

    Training data and prediction images both pass through here, so equal pixels give equal
    inputs bit for bit.
    """
    return np.multiply(pixels, np.float32(scale), dtype=np.float32, order="C")


def _check_sample_shape(c: int, h: int, w: int, what: str) -> None:
    if c not in (1, 3):
        raise DatasetError(f"{what} has {c} channels: expected 1 (grayscale) or 3 (RGB)")
    if h < 1 or w < 1:
        raise DatasetError(
            f"{what} has images of {h}x{w} pixels: height and width must be at least 1"
        )
    if h * w > MAX_IMAGE_PIXELS:
        raise DatasetTooLarge(
            f"{what} has images of {h}x{w} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels: downscale them"
        )


def _check_output_size(
    shape: tuple[int, ...], dtype: np.dtype | type, max_bytes: int, what: str
) -> None:
    """Refuse before allocating an array of this shape and dtype over max_bytes."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise DatasetTooLarge(
            f"{what} of shape {tuple(shape)} would take {_fmt_bytes(nbytes)} "
            f"as {dtype}, over the {_fmt_bytes(max_bytes)} limit: use fewer or "
            f"smaller images"
        )


def check_labels(
    y, n_samples: int, n_classes: int | None, what: str, *, need_two_classes: bool = True
) -> tuple[np.ndarray, int]:
    """The one label check, for the format readers and for the network's own arguments.

    y must be n_samples integers in 0..K-1, K = n_classes (None: max(y) + 1, at most
    MAX_CLASSES); with ``need_two_classes`` (a dataset to train on) at least two distinct labels
    must be present. Returns y as int64 (N,) and K.
    """
    if n_samples == 0:  # a mean over no samples: a ZeroDivisionError or a NaN loss otherwise
        raise DatasetError("no samples: training and evaluation need at least one image")
    y = np.asarray(y)
    if y.shape != (n_samples,) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{what} must be {n_samples} integers, one label per sample, got an array of "
            f"shape {y.shape} and dtype {y.dtype}"
        )
    lo, hi = int(y.min()), int(y.max())
    if n_classes is None:
        n_classes = hi + 1
        if n_classes > MAX_CLASSES:
            raise DatasetError(
                f"{what} holds the label {hi}, implying {n_classes:,} classes, "
                f"over the limit of {MAX_CLASSES:,}: labels must be 0..K-1"
            )
    if lo < 0:
        raise DatasetError(
            f"{what} holds the negative label {lo}: labels must be 0..{max(n_classes, 1) - 1}"
        )
    if hi >= n_classes:
        raise DatasetError(
            f"{what} holds the label {hi} but there are only {n_classes} classes: "
            f"labels must be 0..{n_classes - 1}"
        )
    y = y.astype(np.int64, copy=False)
    if need_two_classes and np.count_nonzero(np.bincount(y, minlength=n_classes)) < 2:
        raise DatasetError(
            f"{what} holds a single class (label {lo}): a classifier needs "
            f"samples of at least two classes"
        )
    return y, n_classes


def _check_class_names(names: list[str], what: str) -> None:
    if not 2 <= len(names) <= MAX_CLASSES:
        raise DatasetError(f"{what} has {len(names)} class names: expected 2 to {MAX_CLASSES:,}")
    for name in names:
        if not name.strip() or len(name) > _MAX_NAME_CHARS or not name.isprintable():
            raise DatasetError(
                f"class name {name[:40]!r} must be 1 to {_MAX_NAME_CHARS} printable characters"
            )
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)
    if dupes:
        raise DatasetError(f"class names must be unique, these repeat: {dupes[:5]}")


def _byte_preprocessing(source_format: str) -> dict:
    return {
        "scale": _BYTE_SCALE,
        "image_scale": _BYTE_SCALE,
        "source_dtype": "uint8",
        "source_format": source_format,
    }
