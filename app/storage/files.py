"""Atomic, durable file writes: a unique temp file in the target's directory, fsync, rename.

A reader therefore sees either the previous file or the complete new one, never a torn write,
even after a kill -9 or a power loss. Temp files are hidden (a leading dot, as cnn_core's own
writer names them too); those a dead writer left are removed by `sweep_temp_files` at startup.
"""

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp)` on a temp path next to `path` (same suffix), then move it into place."""
    tmp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        save(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` atomically."""
    atomic_save(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically."""
    atomic_write_bytes(path, json.dumps(data, allow_nan=False, indent=1).encode())


def read_json(path: Path) -> Any:
    """Parse the JSON file at `path`."""
    return json.loads(path.read_text())


def sweep_temp_files(directory: Path) -> None:
    """Remove the hidden temp files dead writers left in `directory`."""
    for leftover in directory.glob(".*"):
        leftover.unlink(missing_ok=True)
