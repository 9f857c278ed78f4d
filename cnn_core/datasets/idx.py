"""Reading MNIST IDX image and label files, gzipped or not."""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib

import numpy as np

from cnn_core.errors import CorruptFile, DatasetError, DatasetTooLarge, UnsupportedFormat

from .checks import _byte_preprocessing, _check_sample_shape, check_labels
from .dataset import Dataset, Source
from .framing import record_conventions
from .limits import MAX_DATASET_BYTES
from .sources import _fmt_bytes, _read_limited

_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


_GZIP_MAGIC = b"\x1f\x8b"


def _gunzip_limited(data: bytes, max_bytes: int, what: str) -> bytes:
    """Decompress gzip data, stopping as soon as the output exceeds max_bytes."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFile(
            f"{what} is a corrupt or truncated gzip file ({exc}): compress it "
            f"again or upload it uncompressed"
        ) from None
    if len(out) > max_bytes:
        raise DatasetTooLarge(
            f"{what} decompresses to more than the {_fmt_bytes(max_bytes)} "
            f"limit: use a smaller subset"
        )
    return out


def _read_idx(source: Source, max_bytes: int, what: str) -> np.ndarray:
    """uint8 array from an IDX file (gzipped or not): (N,) labels or (N, H, W) images."""
    data = _read_limited(source, max_bytes, what)
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip_limited(data, max_bytes, what)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise UnsupportedFormat(
            f"{what} is not an IDX file: it must start with the bytes "
            f"00 00 08 and the number of dimensions, as MNIST's files do"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        name = _IDX_TYPES.get(dtype_code, "unknown")
        raise DatasetError(
            f"{what} holds IDX type 0x{dtype_code:02X} ({name}): only unsigned "
            f"bytes (0x08) are supported, as in MNIST"
        )
    if ndim not in (1, 3):
        raise DatasetError(
            f"{what} has {ndim} dimensions: expected 1 (labels) or 3 (images N x H x W)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFile(f"{what} is truncated inside its header: re-download it")
    dims = struct.unpack(f">{ndim}I", data[4:header])  # Python ints: no overflow
    expected = math.prod(dims)
    decoded = expected * (1 if ndim == 3 else 8)  # as uint8 pixels or int64 y
    if decoded > max_bytes:
        raise DatasetTooLarge(
            f"{what} declares dimensions {dims}, {_fmt_bytes(decoded)} once "
            f"decoded, over the {_fmt_bytes(max_bytes)} limit for a dataset: "
            f"use a smaller subset"
        )
    actual = len(data) - header
    if actual < expected:
        raise CorruptFile(
            f"{what} is truncated: its header declares {dims} = {expected:,} "
            f"bytes of data but it holds {actual:,}; re-download it"
        )
    if actual > expected:
        raise CorruptFile(
            f"{what} has {actual - expected:,} bytes after the {expected:,} its "
            f"header {dims} declares: it is corrupt or not an IDX file"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    n, h, w = images.shape
    if n < 1:
        raise DatasetError("the IDX images file holds no images")
    _check_sample_shape(1, h, w, "the IDX images file")
    if len(labels) != n:
        raise DatasetError(
            f"the IDX images file holds {n} images but the labels file holds "
            f"{len(labels)} labels: upload matching files (e.g. both train or "
            f"both test)"
        )
    y, n_classes = check_labels(labels, n, None, "the IDX labels file")
    pixels = images[:, None]
    return Dataset(
        pixels=pixels,
        y=y,
        class_names=[str(i) for i in range(n_classes)],
        preprocessing={**_byte_preprocessing("idx"), **record_conventions(pixels, 1.0)},
    )


def load_idx(
    images_source: Source, labels_source: Source, *, max_bytes: int = MAX_DATASET_BYTES
) -> Dataset:
    """Read an MNIST-style IDX pair (each gzipped or not): uint8 images (N,H,W), labels (N,)."""
    images = _read_idx(images_source, max_bytes, "the IDX images file")
    labels = _read_idx(labels_source, max_bytes, "the IDX labels file")
    if images.ndim == 1 and labels.ndim == 3:
        raise DatasetError(
            "the IDX files are swapped: pass the images file first, then the labels file"
        )
    if images.ndim != 3:
        raise DatasetError(
            "the IDX images file has 1 dimension: it is a labels file; pass an "
            "images file (3 dimensions) first"
        )
    if labels.ndim != 1:
        raise DatasetError(
            "the IDX labels file has 3 dimensions: it is an images file; pass a "
            "labels file (1 dimension) second"
        )
    return _idx_dataset(images, labels)
