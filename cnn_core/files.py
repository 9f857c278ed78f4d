"""Safe files: atomic writes, and npz archives of plain arrays plus JSON metadata.

An archive written here is a NumPy ``.npz`` of numeric arrays and one ``__meta__`` member holding
UTF-8 JSON as uint8 bytes, so it loads with ``allow_pickle=False``: no code runs on load. The
metadata carries a format name and version, checked before anything else is trusted.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError

META_KEY = "__meta__"


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``. Readers see the old file or the new one, never a torn one, even after a kill -9.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_archive(path, arrays, meta):
    """Atomically write ``arrays`` (name -> ndarray) and the JSON-able ``meta`` to ``path``."""
    members = {name: np.asarray(a) for name, a in arrays.items()}
    members[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **members))


def load_archive(path, fmt, version):
    """Read an archive written by :func:`save_archive`; returns ``(arrays, meta)``.

    Raises ModelFileError if the file is missing, is not such an archive, holds object arrays,
    or has another format name or version.
    """
    try:
        with open(path, "rb") as file:  # ours to close: np.load leaks it on a corrupt zip
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array has no `with`
                raise ModelFileError(f"{Path(path).name} is not a {fmt} file (not an npz archive)")
            with archive:
                if META_KEY not in archive.files:
                    raise ModelFileError(f"{Path(path).name} is not a {fmt} file (no metadata)")
                meta = json.loads(archive[META_KEY].tobytes().decode())
                if not isinstance(meta, dict):
                    raise ModelFileError(f"{Path(path).name} is not a {fmt} file (bad metadata)")
                if meta.get("format") != fmt:
                    raise ModelFileError(
                        f"{Path(path).name} is a {meta.get('format')!r} file, not {fmt}"
                    )
                if meta.get("format_version") != version:
                    raise ModelFileError(
                        f"{Path(path).name} has format version {meta.get('format_version')}; "
                        f"this cnn_core reads version {version}"
                    )
                arrays = {name: archive[name] for name in archive.files if name != META_KEY}
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise ModelFileError(f"no such file: {path}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{Path(path).name} is not a readable {fmt} file: {e}") from None
    return arrays, meta
