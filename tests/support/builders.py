"""Small inputs that several test modules build: digits, uploadable files, a tiny network."""

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HOLDOUT = Path(__file__).resolve().parents[1] / "data" / "mnist_holdout.npz"

# Trains on a few hundred digits in well under a second per epoch.
TINY_ARCHITECTURE = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 4, "kernel_size": 5, "stride": 2, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}
# Linear layers: with SGD at learning rate 10 the cost becomes NaN within the first epoch.
DIVERGING_ARCHITECTURE = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "dense", "units": 64, "activation": "linear"},
        {"type": "dense", "units": 64, "activation": "linear"},
        {"type": "dense", "units": 10},
    ],
}
TINY_TRAINING = {
    "epochs": 2,
    "batch_size": 32,
    "validation_split": 0.1,
    "seed": 0,
    "optimizer": {"name": "adam", "learning_rate": 0.01},
}


def holdout() -> tuple[np.ndarray, np.ndarray]:
    """500 real MNIST digits that are not in the built-in sample: uint8 (N, 28, 28), labels."""
    with np.load(HOLDOUT, allow_pickle=False) as data:
        return data["X"], data["y"]


def npz_bytes(**arrays: object) -> bytes:
    """An .npz of the named arrays (usually X and y), as an upload would carry it."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def digits_npz(n: int = 300) -> bytes:
    """The first `n` holdout digits as an uploadable .npz."""
    X, y = holdout()
    return npz_bytes(X=X[:n], y=y[:n])


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An MNIST IDX file of `array` as bytes, its header declaring `type_code`."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def png_bytes(pixels: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    """`pixels` (H, W) uint8 encoded as an image, optionally converted to `mode` first."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny but valid-looking grayscale PNG whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def zip_bytes(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of {name or ZipInfo: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def image_zip_bytes(per_class: int = 4) -> bytes:
    """A .zip of one folder per class ("3", "7") of PNG digits."""
    X, y = holdout()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in (3, 7):
            for i, index in enumerate(np.flatnonzero(y == label)[:per_class]):
                archive.writestr(f"digits/{label}/{i}.png", png_bytes(X[index]))
    return buffer.getvalue()
