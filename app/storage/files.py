"""Atomic, durable file writes (cnn_core's one writer: a hidden temp file beside the target,
fsync, rename), JSON on top of it, and the sweep of temp files a dead writer left.

A reader therefore sees either the previous file or the complete new one, never a torn write,
even after a kill -9 or a power loss. Temp files are hidden (a leading dot); those a dead writer
left are removed by `sweep_temp_files` at startup.
"""

import json
from pathlib import Path
from typing import Any

from cnn_core.files import atomic_write


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` atomically."""
    atomic_write(path, lambda file: file.write(payload))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically."""
    atomic_write_bytes(path, json.dumps(data, allow_nan=False, indent=1).encode())


def remove_temp_files_of(path: Path) -> None:
    """Remove the temp files a killed writer of `path` left (`.<name>.*`, as cnn_core's writer
    names them); call it only once that writer is dead."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        leftover.unlink(missing_ok=True)


def sweep_temp_files(directory: Path) -> None:
    """Remove the hidden temp files dead writers left in `directory`."""
    for leftover in directory.glob(".*"):
        leftover.unlink(missing_ok=True)
