"""Reading ``.npz`` datasets: X, y and optional class_names, checked from headers first."""

from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np

from cnn_core.errors import CorruptFile, DatasetError, DatasetTooLarge

from .checks import (
    _BYTE_SCALE,
    _byte_preprocessing,
    _check_class_names,
    _check_output_size,
    _check_sample_shape,
    check_labels,
)
from .dataset import Dataset, Source
from .framing import record_conventions
from .limits import (
    _MAX_NAME_CHARS,
    _MAX_NPZ_MEMBERS,
    _NPY_MAX_HEADER,
    MAX_CLASSES,
    MAX_DATASET_BYTES,
)
from .sources import _fmt_bytes, _open_zip

_X_CHUNK_BYTES = 4 * 2**20  # how much of X is read at a time


def _npy_header(fp, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a .npy header, reading nothing past it."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, _NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, _NPY_MAX_HEADER)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptFile(
            f"npz member {member!r} is not a valid .npy array ({exc}): save the "
            f"arrays with np.savez or np.savez_compressed"
        ) from None
    if any(d < 0 for d in shape):
        raise DatasetError(f"npz member {member!r} declares the negative shape {shape}")
    return tuple(int(d) for d in shape), bool(fortran), dtype


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
                shape, _, dtype = _npy_header(fp, info.filename)
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


def _stored_dtype(dtype: np.dtype) -> type:
    """How X of this dtype is kept: integer pixels as uint8, floats as float32."""
    return np.uint8 if dtype.kind in "ui" else np.float32


def _read_x(zf: zipfile.ZipFile) -> tuple[np.ndarray, np.dtype, float, float]:
    """X in the dtype it is kept in (:func:`_stored_dtype`), its source dtype and its smallest
    and largest source values (NaN if it holds one), read a few MB at a time: a wider source
    (float64, int64) is never whole in memory, and values are checked before they are cast."""
    try:
        with zf.open("X.npy") as fp:
            shape, fortran, dtype = _npy_header(fp, "X.npy")
            kept = np.empty(shape[::-1] if fortran else shape, _stored_dtype(dtype))
            flat, lo, hi = kept.reshape(-1), np.inf, -np.inf
            step = max(1, _X_CHUNK_BYTES // dtype.itemsize)
            for start in range(0, flat.size, step):
                count = min(step, flat.size - start)
                data = fp.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise EOFError(f"it ends after {start + len(data) // dtype.itemsize} values")
                chunk = np.frombuffer(data, dtype)
                lo, hi = np.minimum(lo, chunk.min()), np.maximum(hi, chunk.max())
                flat[start : start + count] = chunk  # wraps out-of-range integers: refused after
    except (ValueError, EOFError, OSError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptFile(
            f"npz array 'X' is truncated or corrupt ({exc}): re-save it with np.savez"
        ) from None
    return (kept.T if fortran else kept), dtype, float(lo), float(hi)


def _x_from_array(
    X: np.ndarray, source: np.dtype, lo: float, hi: float, layout: str, source_format: str
) -> tuple[np.ndarray, dict]:
    """The (N, C, H, W) pixels to keep (contiguous) from X as :func:`_read_x` read it, and its
    preprocessing record."""
    if layout == "NHW":
        X = X[:, None]
    elif layout == "NHWC":
        X = X.transpose(0, 3, 1, 2)
    source_dtype = str(source)
    if source.kind in "ui":
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi > 255:
            raise DatasetError(
                f"X is an integer array with values from {lo} to {hi}: integer "
                f"pixels must be 0..255 (save floats for other ranges)"
            )
        prep = _byte_preprocessing(source_format)
        prep["source_dtype"] = source_dtype
        return np.ascontiguousarray(X), prep

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
    return np.ascontiguousarray(X), prep


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
        x_shape, x_dtype = headers["X"]
        layout = _x_layout(x_shape)
        n, c, h, w = _nchw_shape(x_shape, layout)
        if n < 1:
            raise DatasetError("X holds no samples: a dataset needs at least one image")
        _check_sample_shape(c, h, w, "X")
        _check_output_size((n, c, h, w), _stored_dtype(x_dtype), max_bytes, "X")
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
        y, n_classes = check_labels(y, n, len(names) if names else None, "y")
        pixels, prep = _x_from_array(*_read_x(zf), layout, "npz")
    if names is None:
        names = [str(i) for i in range(n_classes)]
    levels_scale = 1.0 if pixels.dtype == np.uint8 else prep["image_scale"]
    prep = {**prep, **record_conventions(pixels, levels_scale)}
    return Dataset(pixels=pixels, y=y, class_names=names, preprocessing=prep)
