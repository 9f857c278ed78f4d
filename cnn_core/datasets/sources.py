"""Reading bounded bytes from a path, bytes or a file object, refusing more than a limit."""

from __future__ import annotations

import io
import os
import zipfile
from typing import TYPE_CHECKING

from cnn_core.errors import CorruptFile, DatasetTooLarge

if TYPE_CHECKING:  # the Dataset module uses the checks, which use these readers
    from .dataset import Source


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
