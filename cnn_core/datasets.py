"""Read image-classification datasets from untrusted files into float32 arrays.

Three formats are read, recognised from their bytes and never from file names:

- ``.npz``: arrays ``X`` (N,H,W), (N,C,H,W) or (N,H,W,C) with C of 1 or 3, ``y`` (N,) integer
  labels and optionally ``class_names`` (K,) strings. X is uint8 (or any integer type holding
  0..255) or float in 0..1 or 0..255.
- MNIST IDX: an images file (magic ``00 00 08 03``, uint8 (N,H,W)) and a labels file (magic
  ``00 00 08 01``, uint8 (N,)), each optionally gzipped.
- ``.zip`` of one folder per class (optionally all under one top folder) of PNG/JPEG images.

**Sources.** Every ``source`` is a path (``str`` or ``os.PathLike``), the file's ``bytes``, or a
binary file object read from its current position (seekable for zip-based formats).

**Scaling rule.** The loaded ``Dataset.X`` is float32 (N, C, H, W). ``Dataset.preprocessing``
records how raw pixels became X so that prediction repeats it exactly:

- ``scale``: the factor applied to the stored values: 1/255 for integer (8-bit) data, so X is in
  0..1; 1.0 for float data, which is used as given.
- ``image_scale``: the factor an 8-bit image's pixels must be multiplied by at prediction time:
  1/255 for integer data and for float data whose maximum is <= 1; 1.0 for float data in 0..255.
- ``source_dtype`` (e.g. ``"uint8"``) and ``source_format`` (``"npz"``, ``"idx"``,
  ``"image_zip"``) describe where X came from.

Float data must lie in 0..255 (negative or larger values are refused), because an image posted
for prediction could not be scaled to match standardised data. Images, whether in a zip or posted
for prediction, go through the same function, :func:`images_to_array`: converted to the
dataset's channels ("L" or "RGB", transparency composited on black), resized to (H, W) with
Lanczos, then multiplied by ``image_scale`` in float32. Open untrusted images with
:func:`open_image` (PNG and JPEG only, at most ``MAX_IMAGE_PIXELS`` pixels, checked before
decoding).

**Limits.** Every size is checked from headers before anything large is allocated, and again
while reading (a header can lie): see the ``MAX_*`` defaults below, overridable per call.
Problems raise :class:`~cnn_core.errors.DatasetError` with a message that says what is wrong and
how to fix it; three subclasses tell the kinds apart: ``DatasetTooLarge`` (over a limit),
``UnsupportedFormat`` (bytes of no accepted format) and ``CorruptFile`` (truncated or corrupt).
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import re
import stat
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from cnn_core.errors import CorruptFile, DatasetError, DatasetTooLarge, UnsupportedFormat

__all__ = [
    "IMAGE_SIGNATURES",
    "MAX_CLASSES",
    "MAX_DATASET_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_RATIO",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_ENTRIES",
    "Dataset",
    "Source",
    "images_to_array",
    "load_dataset",
    "load_idx",
    "load_image_zip",
    "load_mnist_sample",
    "load_npz",
    "open_image",
]

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]

MAX_DATASET_BYTES = 512 * 2**20
"""Cap on any file read, any array decoded, and the float32 X built (bytes)."""
MAX_ZIP_ENTRIES = 100_000
"""Cap on the number of entries in an image zip."""
MAX_ZIP_BYTES = 512 * 2**20
"""Cap on the bytes actually decompressed from an image zip, all entries together."""
MAX_RATIO = 200
"""Cap on one zip entry's decompressed size divided by its compressed size."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""Cap on the width * height of one image (and of one sample's H * W)."""
MAX_CLASSES = 10_000
"""Cap on the number of classes."""

IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
"""How PNG and JPEG files start: bytes that do but fail to open are corrupt, not another format."""
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ARCHIVE_SUFFIXES = (".zip", ".npz", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar", ".zst")
_ARCHIVE_MAGICS = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"\x28\xb5\x2f\xfd",
)
_JUNK_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow's decoders raise on hostile or broken files (PNG chunk errors are SyntaxError).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
_NPY_MAX_HEADER = 10_000
_MAX_NPZ_MEMBERS = 64
_MAX_NAME_CHARS = 200
_BYTE_SCALE = 1.0 / 255.0


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels ready for training.

    X: float32 (N, C, H, W), already scaled (see the module docstring); y: int64 (N,) in
    0..K-1; class_names: K names, label i is class_names[i]; preprocessing: the JSON-able
    record of the scaling, which prediction passes to :func:`images_to_array`.
    """

    X: np.ndarray
    y: np.ndarray
    class_names: list[str]
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.X.ndim != 4 or self.X.dtype != np.float32:
            raise DatasetError(
                f"Dataset.X must be float32 (N, C, H, W), got {self.X.dtype} {self.X.shape}"
            )
        if self.y.shape != (self.X.shape[0],) or self.y.dtype != np.int64:
            raise DatasetError(
                f"Dataset.y must be int64 of shape ({self.X.shape[0]},), got "
                f"{self.y.dtype} {self.y.shape}"
            )
        if len(self.y) and not 0 <= self.y.min() <= self.y.max() < len(self.class_names):
            raise DatasetError(
                f"Dataset.y must lie in 0..{len(self.class_names) - 1}, one label per class name"
            )

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.X.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        """Samples per class, indexed by label."""
        return np.bincount(self.y, minlength=self.n_classes).tolist()

    def __repr__(self) -> str:
        return (
            f"Dataset(n_samples={self.n_samples}, input_shape={self.input_shape}, "
            f"n_classes={self.n_classes})"
        )


# ---------------------------------------------------------------------------------------------
# Sources


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _read_limited(source: Source, limit: int, what: str) -> bytes:
    """All bytes of source, refusing (without reading further) anything over limit."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            data = f.read(limit + 1)
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
    else:
        raise TypeError(f"a dataset source is a path, bytes or a binary file, not {type(source)}")
    if len(data) > limit:
        raise DatasetTooLarge(
            f"{what} is larger than the {_fmt_bytes(limit)} limit: use a smaller subset of the data"
        )
    return data


def _peek(source: Source, n: int) -> bytes:
    """The first n bytes of source, leaving a file object where it was."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(n)
    if hasattr(source, "read") and hasattr(source, "seek"):
        pos = source.tell()
        head = source.read(n)
        source.seek(pos)
        return head
    raise TypeError(
        f"a dataset source is a path, bytes or a seekable binary file, not {type(source)}"
    )


def _open_zip(source: Source, what: str) -> zipfile.ZipFile:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)) and not hasattr(source, "seek"):
        raise TypeError(
            f"a dataset source is a path, bytes or a seekable binary file, not {type(source)}"
        )
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptFile(
            f"{what} is not a readable zip archive ({exc}): re-create it with "
            f"np.savez or a standard zip tool"
        ) from None


# ---------------------------------------------------------------------------------------------
# Shared validation and scaling


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


def _check_output_size(shape: tuple[int, ...], max_bytes: int, what: str) -> None:
    """Refuse before allocating a float32 array of this shape over max_bytes."""
    nbytes = math.prod(shape) * 4
    if nbytes > max_bytes:
        raise DatasetTooLarge(
            f"{what} of shape {tuple(shape)} would take {_fmt_bytes(nbytes)} "
            f"as float32, over the {_fmt_bytes(max_bytes)} limit: use fewer or "
            f"smaller images"
        )


def _check_labels(y: np.ndarray, n_classes: int | None, what: str) -> int:
    """Validate int64 labels (N,); return the number of classes K."""
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DatasetError(f"{what} holds the negative label {lo}: labels must be 0..K-1")
    if n_classes is None:
        n_classes = hi + 1
        if n_classes > MAX_CLASSES:
            raise DatasetError(
                f"{what} holds the label {hi}, implying {n_classes:,} classes, "
                f"over the limit of {MAX_CLASSES:,}: labels must be 0..K-1"
            )
    elif hi >= n_classes:
        raise DatasetError(
            f"{what} holds the label {hi} but there are only {n_classes} class "
            f"names: labels must be 0..{n_classes - 1}"
        )
    present = np.count_nonzero(np.bincount(y, minlength=n_classes))
    if present < 2:
        raise DatasetError(
            f"{what} holds a single class (label {lo}): a classifier needs "
            f"samples of at least two classes"
        )
    return n_classes


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


# ---------------------------------------------------------------------------------------------
# npz


def _npy_header(fp, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, reading nothing past it."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp, _NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp, _NPY_MAX_HEADER)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptFile(
            f"npz member {member!r} is not a valid .npy array ({exc}): save the "
            f"arrays with np.savez or np.savez_compressed"
        ) from None
    if any(d < 0 for d in shape):
        raise DatasetError(f"npz member {member!r} declares the negative shape {shape}")
    return tuple(int(d) for d in shape), dtype


def _check_member_dtype(key: str, dtype: np.dtype, member: str) -> None:
    if dtype.hasobject:
        raise DatasetError(
            f"npz array {key!r} holds Python objects, which would need pickle to "
            f"load and are refused: save numeric arrays (and class_names as "
            f"np.array([...], dtype=str))"
        )
    if dtype.names is not None or dtype.subdtype is not None:
        raise DatasetError(
            f"npz array {key!r} has the structured dtype {dtype}: save a plain numeric array"
        )
    if key == "class_names":
        if dtype.kind != "U":
            raise DatasetError(
                f"class_names has dtype {dtype}: save it as "
                f"np.array(['cat', 'dog', ...], dtype=str)"
            )
        if dtype.itemsize // 4 > _MAX_NAME_CHARS:
            raise DatasetError(
                f"class_names has names of up to {dtype.itemsize // 4} "
                f"characters: keep each under {_MAX_NAME_CHARS}"
            )
    elif key == "X":
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            raise DatasetError(
                f"X has dtype {dtype}: expected uint8 pixels (0..255) or floats (0..1 or 0..255)"
            )
    elif key == "y":
        if dtype.kind not in "biuf" or dtype.itemsize > 8:
            raise DatasetError(f"y has dtype {dtype}: expected integer class labels 0..K-1")
    elif dtype.kind not in "biufc":
        raise DatasetError(
            f"npz array {key!r} has dtype {dtype}: only numeric arrays, plus "
            f"string class_names, are accepted"
        )


def _preflight_npz(
    zf: zipfile.ZipFile, max_bytes: int
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check every member's header; return {key: (shape, dtype)} of the arrays to load."""
    infos = zf.infolist()
    if len(infos) > _MAX_NPZ_MEMBERS:
        raise DatasetTooLarge(
            f"the npz holds {len(infos)} members: expected X, y and optionally class_names"
        )
    names = [info.filename for info in infos]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(
            f"the npz holds several members named {repeated}: re-save it with np.savez"
        )
    headers = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise DatasetError(
                f"npz member {info.filename!r} is not a .npy array: save the "
                f"arrays with np.savez or np.savez_compressed"
            )
        key = info.filename[:-4]
        try:
            with zf.open(info) as fp:
                shape, dtype = _npy_header(fp, info.filename)
        except (RuntimeError, NotImplementedError, zipfile.BadZipFile) as exc:
            raise CorruptFile(
                f"npz member {info.filename!r} cannot be read ({exc}): re-save it with np.savez"
            ) from None
        _check_member_dtype(key, dtype, info.filename)
        headers[key] = (shape, dtype)

    missing = [k for k in ("X", "y") if k not in headers]
    if missing:
        raise DatasetError(
            f"the npz lacks {' and '.join(missing)}: it holds "
            f"{sorted(headers)}; save it as np.savez(path, X=images, y=labels) "
            f"with optional class_names=np.array([...])"
        )
    wanted = {k: v for k, v in headers.items() if k in ("X", "y", "class_names")}
    total = 0
    for key, (shape, dtype) in wanted.items():
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if nbytes > max_bytes or total > max_bytes:
            raise DatasetTooLarge(
                f"npz array {key!r} declares shape {shape} of {dtype}, "
                f"{_fmt_bytes(nbytes)}, over the {_fmt_bytes(max_bytes)} "
                f"limit for a dataset: use a smaller subset"
            )
    return wanted


def _x_layout(shape: tuple[int, ...]) -> str:
    """'NHW', 'NCHW' or 'NHWC' for an X of this shape, or raise saying why none fits."""
    expected = "expected (N,H,W), (N,C,H,W) or (N,H,W,C) with C of 1 or 3"
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[3] in (1, 3) and shape[1] not in (1, 3):
            return "NHWC"
        if shape[1] in (1, 3):
            return "NCHW"
        hint = "; drop the alpha channel (X[..., :3])" if 4 in (shape[1], shape[3]) else ""
        raise DatasetError(
            f"X has shape {shape}: its channel axis (second or last) is neither 1 "
            f"nor 3: {expected}{hint}"
        )
    if len(shape) == 2:
        raise DatasetError(
            f"X has shape {shape}, one flat vector per sample: {expected}; "
            f"reshape it, e.g. X.reshape(-1, 28, 28) for MNIST"
        )
    raise DatasetError(f"X has {len(shape)} dimensions: {expected}")


def _nchw_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int, int]:
    if layout == "NHW":
        return shape[0], 1, shape[1], shape[2]
    if layout == "NHWC":
        return shape[0], shape[3], shape[1], shape[2]
    return shape  # type: ignore[return-value]


def _read_npz_array(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    try:
        with zf.open(f"{key}.npy") as fp:
            return np.lib.format.read_array(fp, allow_pickle=False, max_header_size=_NPY_MAX_HEADER)
    except (ValueError, EOFError, OSError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptFile(
            f"npz array {key!r} is truncated or corrupt ({exc}): re-save it with np.savez"
        ) from None


def _x_from_array(X: np.ndarray, layout: str, source_format: str) -> tuple[np.ndarray, dict]:
    """Scaled float32 (N, C, H, W) from a validated raw X, and its preprocessing record."""
    if layout == "NHW":
        X = X[:, None]
    elif layout == "NHWC":
        X = X.transpose(0, 3, 1, 2)
    source_dtype = str(X.dtype)
    if X.dtype.kind in "ui":
        lo, hi = int(X.min()), int(X.max())
        if lo < 0 or hi > 255:
            raise DatasetError(
                f"X is an integer array with values from {lo} to {hi}: integer "
                f"pixels must be 0..255 (save floats for other ranges)"
            )
        pixels = X if X.dtype == np.uint8 else X.astype(np.uint8)
        prep = _byte_preprocessing(source_format)
        prep["source_dtype"] = source_dtype
        return _scale_pixels(pixels, _BYTE_SCALE), prep

    lo, hi = float(X.min()), float(X.max())  # NaN and inf propagate into min/max
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1)
        raise DatasetError(
            f"X contains NaN or infinite values in {int(bad.sum())} samples "
            f"(first: sample {int(bad.argmax())}): remove or repair them"
        )
    if lo < 0 or hi > 255:
        raise DatasetError(
            f"X holds values from {lo:g} to {hi:g}: expected pixel values in "
            f"0..1 or 0..255, so that images posted for prediction can be scaled "
            f"the same way; save unnormalised pixels"
        )
    image_scale = _BYTE_SCALE if hi <= 1.0 else 1.0
    prep = {
        "scale": 1.0,
        "image_scale": image_scale,
        "source_dtype": source_dtype,
        "source_format": source_format,
    }
    return np.ascontiguousarray(X, dtype=np.float32), prep


def _labels_from_array(y: np.ndarray, n: int) -> np.ndarray:
    """int64 (N,) labels from y of shape (N,) or (N, 1), integer, bool or whole floats."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = "; for one-hot labels save y.argmax(axis=1)" if y.ndim == 2 else ""
        raise DatasetError(
            f"y has shape {y.shape}: expected ({n},), one integer label per sample{hint}"
        )
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise DatasetError(
                f"y holds the non-integer label {y[~whole][0].item()!r} at index "
                f"{int(np.argmin(whole))}: labels must be integers 0..K-1"
            )
    if y.dtype.kind in "uf" and np.abs(y).max() > 2**62:  # would wrap when cast to int64
        raise DatasetError(
            f"y holds the label {np.abs(y).max().item()!r}, too large to be a "
            f"class index: labels must be integers 0..K-1"
        )
    return y.astype(np.int64)


def load_npz(source: Source, *, max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """Read an .npz of X, y and optional class_names, checking every header before loading.

    X: (N,H,W), (N,C,H,W) or (N,H,W,C), C of 1 or 3 (channels-last when the last axis is 1
    or 3 and the second is not); uint8 or float; y: (N,) integers 0..K-1, K = len(class_names)
    or max(y) + 1; pickled arrays are never loaded.
    """
    with _open_zip(source, "the npz file") as zf:
        headers = _preflight_npz(zf, max_bytes)
        x_shape, _ = headers["X"]
        layout = _x_layout(x_shape)
        n, c, h, w = _nchw_shape(x_shape, layout)
        if n < 1:
            raise DatasetError("X holds no samples: a dataset needs at least one image")
        _check_sample_shape(c, h, w, "X")
        _check_output_size((n, c, h, w), max_bytes, "X")
        y_shape, _ = headers["y"]
        if not y_shape or y_shape[0] != n:
            raise DatasetError(
                f"X holds {n} samples but y has shape {y_shape}: expected ({n},), "
                f"one label per sample"
            )
        names = None
        if "class_names" in headers:
            names_shape, _ = headers["class_names"]
            if len(names_shape) != 1 or names_shape[0] > MAX_CLASSES:
                raise DatasetError(
                    f"class_names has shape {names_shape}: expected (K,) with K "
                    f"up to {MAX_CLASSES:,}"
                )
            names = [str(s) for s in _read_npz_array(zf, "class_names")]
            _check_class_names(names, "class_names")
        y = _labels_from_array(_read_npz_array(zf, "y"), n)
        n_classes = _check_labels(y, len(names) if names else None, "y")
        X, prep = _x_from_array(_read_npz_array(zf, "X"), layout, "npz")
    if names is None:
        names = [str(i) for i in range(n_classes)]
    return Dataset(X=X, y=y, class_names=names, preprocessing=prep)


# ---------------------------------------------------------------------------------------------
# IDX


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
    decoded = expected * (4 if ndim == 3 else 8)  # as float32 X or int64 y
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
    y = labels.astype(np.int64)
    n_classes = _check_labels(y, None, "the IDX labels file")
    X = _scale_pixels(images[:, None], _BYTE_SCALE)
    return Dataset(
        X=X,
        y=y,
        class_names=[str(i) for i in range(n_classes)],
        preprocessing=_byte_preprocessing("idx"),
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


# ---------------------------------------------------------------------------------------------
# Images


def _open_image(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """Open PNG/JPEG bytes, reading only the header; refuse too many pixels before decoding."""
    try:
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x its own limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetTooLarge(
            f"{what} declares far too many pixels (a decompression bomb): use "
            f"images of at most {max_pixels:,} pixels"
        ) from None
    except Image.UnidentifiedImageError:
        if data.startswith(IMAGE_SIGNATURES):
            raise CorruptFile(f"{what} is a truncated or corrupt PNG or JPEG image") from None
        raise UnsupportedFormat(
            f"{what} is not a PNG or JPEG image: convert it to PNG or JPEG"
        ) from None
    except _DECODE_ERRORS as exc:
        raise CorruptFile(f"{what} is not a readable PNG or JPEG image ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DatasetTooLarge(
            f"{what} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}: downscale it"
        )
    return img


def open_image(
    source: Source, *, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None
) -> Image.Image:
    """Decode one untrusted PNG or JPEG (frame 0 of an animated one), refusing other formats
    and over max_pixels pixels. A given name (such as the uploaded file's) starts every error
    message, as in "digit.png: the image is not a PNG or JPEG image: ..."."""
    what = "the image" if name is None else f"{name}: the image"
    data = _read_limited(source, MAX_DATASET_BYTES, what)
    img = _open_image(data, max_pixels, what)
    try:
        img.load()
    except _DECODE_ERRORS as exc:  # truncated or corrupt pixel data
        raise CorruptFile(
            f"{what} could not be decoded ({exc}): it is truncated or corrupt"
        ) from None
    return img


def _is_grayscale(img: Image.Image) -> bool:
    """Whether an image has no colour, judged by its mode (and palette) rather than pixels."""
    if img.mode in _GRAY_MODES:
        return True
    if img.mode == "P":  # optimisers often store grayscale PNGs with a gray palette
        rgb = np.asarray(img.getpalette("RGB") or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """img as "L" or "RGB": 16-bit rescaled to 8, transparency composited on black."""
    if img.mode.startswith("I"):
        wide = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).round().astype(np.uint8))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode not in ("1", "L", "P", "RGB", "RGBA"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, ...
    return img if img.mode == mode else img.convert(mode)


def _image_pixels(img: Image.Image, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) pixels of img in the wanted channels and size."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    img = _to_mode(img, "L" if channels == 1 else "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(height, width, channels)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or not all(int(d) >= 1 for d in input_shape):
        raise DatasetError(f"input_shape {tuple(input_shape)} must be (C, H, W) of positive sizes")
    c, h, w = (int(d) for d in input_shape)
    _check_sample_shape(c, h, w, f"input_shape {(c, h, w)}")
    return c, h, w


def images_to_array(
    images: Sequence[Image.Image], input_shape: Sequence[int], preprocessing: dict
) -> np.ndarray:
    """Convert images to a model's input: float32 (N, C, H, W).

    Each image is converted to C channels (1: "L", 3: "RGB"; transparency is composited on
    black, as MNIST draws white on black), resized to (H, W) with Lanczos, and multiplied by
    preprocessing["image_scale"]. The image zip reader uses this same path, so training and
    prediction see identical numbers for identical images.
    """
    c, h, w = _check_input_shape(input_shape)
    try:
        image_scale = float(preprocessing["image_scale"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError("preprocessing must hold a numeric 'image_scale'") from None
    pixels = np.empty((len(images), h, w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        try:
            pixels[i] = _image_pixels(img, c, h, w)
        except _DECODE_ERRORS as exc:  # decoding happens here for images not yet loaded
            raise CorruptFile(
                f"image {i} could not be decoded ({exc}): it is truncated or corrupt"
            ) from None
    return _scale_pixels(pixels.transpose(0, 3, 1, 2), image_scale)


# ---------------------------------------------------------------------------------------------
# Image zip


def _entry_parts(info: zipfile.ZipInfo) -> list[str]:
    """Path components of a zip entry, refusing names and types that could escape or mislead."""
    name = info.filename
    raw = getattr(info, "orig_filename", name)
    if "\\" in raw:
        raise DatasetError(
            f"zip entry {raw!r} uses backslashes: re-create the zip with a tool "
            f"that writes forward slashes"
        )
    if "\x00" in raw:
        raise DatasetError(f"zip entry {raw!r} contains a NUL byte")
    if name.startswith("/") or re.match(r"[A-Za-z]:(/|$)", name):
        raise DatasetError(
            f"zip entry {name!r} has an absolute path: entries must be relative (class/image.png)"
        )
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise DatasetError(
            f"zip entry {name!r} points outside the archive ('..'): re-create "
            f"the zip from the dataset folder"
        )
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise DatasetError(f"zip entry {name!r} is a symbolic link: store the image itself")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetError(f"zip entry {name!r} is a special file, not an image")
    if info.flag_bits & 0x1:
        raise DatasetError(f"zip entry {name!r} is encrypted: upload an unencrypted zip")
    return [p for p in parts if p not in ("", ".")]


def _is_junk(parts: list[str]) -> bool:
    """Files that zip tools add on their own (macOS resource forks, .DS_Store, Thumbs.db)."""
    return any(p.startswith(".") or p in _JUNK_NAMES for p in parts)


def _image_entries(zf: zipfile.ZipFile, max_entries: int) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class name, entry) for every image, sorted; the folder layout checked."""
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise DatasetTooLarge(
            f"the zip holds {len(infos):,} entries, over the limit of "
            f"{max_entries:,}: use fewer images"
        )
    files = []
    for info in infos:
        parts = _entry_parts(info)
        if info.is_dir() or not parts or _is_junk(parts):
            continue
        lower = parts[-1].lower()
        if lower.endswith(_ARCHIVE_SUFFIXES):
            raise DatasetError(
                f"zip entry {info.filename!r} is an archive: nested archives are "
                f"not expanded; put the images themselves in the zip"
            )
        if not lower.endswith(_IMAGE_SUFFIXES):
            raise DatasetError(
                f"zip entry {info.filename!r} is not a PNG or JPEG image: the zip "
                f"must hold only class folders of .png/.jpg images; remove it"
            )
        files.append((parts, info))
    if not files:
        raise DatasetError(
            "the zip holds no images: expected one folder per class of PNG or JPEG images"
        )
    tops = {parts[0] for parts, _ in files}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in files):
        files = [(parts[1:], info) for parts, info in files]  # one top folder around the classes
    for parts, info in files:
        if len(parts) != 2:
            where = "not inside a class folder" if len(parts) < 2 else "nested too deep"
            raise DatasetError(
                f"zip entry {info.filename!r} is {where}: lay the zip out as "
                f"class_name/image.png, one folder per class"
            )
    entries = sorted(
        ((parts[0], info) for parts, info in files), key=lambda e: (e[0], e[1].filename)
    )
    classes = sorted({cls for cls, _ in entries})
    if len(classes) < 2:
        raise DatasetError(
            f"the zip holds a single class folder {classes[0]!r}: a classifier "
            f"needs at least two, one folder per class"
        )
    _check_class_names(classes, "the zip")
    return entries


def _read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, max_ratio: float, max_total_bytes: int
) -> bytes:
    """The entry's bytes, counting what is really decompressed rather than trusting headers."""
    ratio_limit = int(max_ratio * max(info.compress_size, 1))

    def too_big(size: int) -> DatasetTooLarge:
        if size > ratio_limit:
            return DatasetTooLarge(
                f"zip entry {info.filename!r} expands more than "
                f"{max_ratio:g} times its compressed size "
                f"({info.compress_size:,} bytes): refused as a possible zip "
                f"bomb"
            )
        return DatasetTooLarge(
            f"the zip's images decompress to more than "
            f"{_fmt_bytes(max_total_bytes)}: use fewer or smaller images"
        )

    limit = min(budget, ratio_limit)
    if info.file_size > limit:  # the header alone already says no
        raise too_big(info.file_size)
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)  # the header may lie: stop one byte past the limit
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        zlib.error,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise CorruptFile(
            f"zip entry {info.filename!r} cannot be read ({exc}): the zip is "
            f"corrupt or uses an unsupported compression"
        ) from None
    if len(data) > limit:
        raise too_big(len(data))
    return data


def load_image_zip(
    source: Source,
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_RATIO,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_DATASET_BYTES,
) -> Dataset:
    """Read a zip of class folders of PNG/JPEG images; class names are the sorted folder names.

    All images take one shape: 1 channel if every image is grayscale, else 3; the most common
    size (ties: the first, in sorted entry order), the others resized by images_to_array's path.
    """
    with _open_zip(source, "the zip file") as zf:
        entries = _image_entries(zf, max_entries)
        raws, sizes, gray = [], [], True
        used = 0
        for _, info in entries:
            data = _read_entry(zf, info, max_total_bytes - used, max_ratio, max_total_bytes)
            used += len(data)
            if data.startswith(_ARCHIVE_MAGICS):
                raise DatasetError(
                    f"zip entry {info.filename!r} is an archive, not an image: "
                    f"nested archives are not expanded"
                )
            img = _open_image(data, max_image_pixels, f"zip entry {info.filename!r}")
            sizes.append(img.size)
            gray = gray and _is_grayscale(img)
            img.close()
            raws.append(data)

    class_names = sorted({cls for cls, _ in entries})
    y = np.searchsorted(class_names, [cls for cls, _ in entries]).astype(np.int64)
    _check_labels(y, len(class_names), "the zip")
    (width, height), _ = Counter(sizes).most_common(1)[0]
    channels = 1 if gray else 3
    _check_output_size((len(raws), channels, height, width), max_bytes, "the zip's images")
    pixels = np.empty((len(raws), height, width, channels), dtype=np.uint8)
    for i, ((_, info), data) in enumerate(zip(entries, raws, strict=True)):
        what = f"zip entry {info.filename!r}"
        img = _open_image(data, max_image_pixels, what)
        try:
            pixels[i] = _image_pixels(img, channels, height, width)
        except _DECODE_ERRORS as exc:  # truncated or corrupt pixel data
            raise CorruptFile(
                f"{what} could not be decoded ({exc}): it is truncated or corrupt"
            ) from None
    prep = _byte_preprocessing("image_zip")
    X = _scale_pixels(pixels.transpose(0, 3, 1, 2), prep["image_scale"])
    return Dataset(X=X, y=y, class_names=class_names, preprocessing=prep)


# ---------------------------------------------------------------------------------------------
# Format detection


def _is_npz(source: Source) -> bool:
    """Whether a zip holds .npy arrays (an npz) rather than image folders."""
    with _open_zip(source, "the zip file") as zf:
        names = zf.namelist()
    if not names:
        raise DatasetError(
            "the zip file is empty: upload an npz of X and y, or a zip of class folders of images"
        )
    return "X.npy" in names or "y.npy" in names or all(n.endswith(".npy") for n in names)


def load_dataset(
    sources: Sequence[Source],
    *,
    max_bytes: int = MAX_DATASET_BYTES,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_RATIO,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> Dataset:
    """Read one dataset from one file (npz or image zip) or two (IDX images and labels).

    The format is decided from the bytes, never from file names: a zip holding X.npy/y.npy is an
    npz, any other zip an image zip; IDX files (gzipped or not) are paired by their number of
    dimensions, 3 for images and 1 for labels, in either order.
    """
    if isinstance(sources, (bytes, str, os.PathLike)) or hasattr(sources, "read"):
        sources = [sources]
    sources = list(sources)
    if not 1 <= len(sources) <= 2:
        raise DatasetError(
            f"got {len(sources)} files: upload one .npz, one .zip of class "
            f"folders, or two IDX files (images and labels)"
        )
    heads = [_peek(s, 8) for s in sources]
    zips = [h.startswith(_ZIP_MAGICS) for h in heads]
    if any(zips):
        if len(sources) != 1:
            raise DatasetError("an .npz or image .zip is a whole dataset: upload it alone")
        if _is_npz(sources[0]):
            return load_npz(sources[0], max_bytes=max_bytes)
        return load_image_zip(
            sources[0],
            max_entries=max_entries,
            max_total_bytes=max_total_bytes,
            max_ratio=max_ratio,
            max_image_pixels=max_image_pixels,
            max_bytes=max_bytes,
        )
    for head in heads:
        if not (head.startswith(_GZIP_MAGIC) or head[:2] == b"\x00\x00"):
            raise UnsupportedFormat(
                f"a file starting with the bytes {head[:8].hex(' ')} is not a "
                f"dataset: {_unknown_hint(head)}"
            )
    if len(sources) != 2:
        raise DatasetError(
            "an IDX file needs its partner: upload both the images file and the labels file"
        )
    arrays = [_read_idx(s, max_bytes, f"IDX file {i + 1}") for i, s in enumerate(sources)]
    ndims = sorted(a.ndim for a in arrays)
    if ndims != [1, 3]:
        kind = "labels" if ndims[0] == 1 else "images"
        raise DatasetError(
            f"both IDX files hold {kind}: upload one images file and one labels file"
        )
    images, labels = sorted(arrays, key=lambda a: -a.ndim)
    return _idx_dataset(images, labels)


def _unknown_hint(head: bytes) -> str:
    if head.startswith(_NPY_MAGIC):
        return "a single .npy holds one array; save X and y together with np.savez"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return "a single image is not a dataset; zip one folder per class of images"
    return (
        "expected an .npz of X and y, a .zip of class folders of PNG/JPEG images, or MNIST "
        "IDX images and labels files (gzipped or not)"
    )


@functools.cache
def _mnist_sample() -> Dataset:
    """The shipped sample, read and parsed once per process, its arrays made read-only."""
    data = (resources.files("cnn_core") / "data" / "mnist_sample.npz").read_bytes()
    dataset = load_npz(data)
    dataset.X.flags.writeable = False
    dataset.y.flags.writeable = False
    return dataset


def load_mnist_sample() -> Dataset:
    """The shipped sample: 2,000 real MNIST digits (200 per class), 1x28x28, classes "0".."9".

    Its X and y are shared by every call and read-only (copy them to change them); the class
    names and preprocessing are each caller's own.
    """
    sample = _mnist_sample()
    return Dataset(
        X=sample.X,
        y=sample.y,
        class_names=list(sample.class_names),
        preprocessing=dict(sample.preprocessing),
    )
