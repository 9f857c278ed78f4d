"""Damaged records and suspected orphans: skipped, logged, reported, moved aside; never deleted.

A data directory can be damaged behind the service's back: a metadata file edited by hand or
truncated by a full disk, a backup copied without SQLite's WAL, a jobs database lost. A repair
made on a guess then destroys data the operator could still have saved. So:

- a metadata file that cannot be read as its record is skipped (the rest is served), logged
  once, and listed in `GET /health` under `problems` until it is fixed;
- a file the service believes is an orphan (weights without metadata, a model no job names)
  is moved into `<data dir>/quarantine/<folder>/`, where the operator can inspect it, put it
  back or delete it; start-up never deletes one.
"""

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("app")
T = TypeVar("T")


class Problems:
    """The unreadable records found so far, by path, each with the reason (thread-safe)."""

    def __init__(self) -> None:
        self._found: dict[Path, str] = {}
        self._lock = threading.Lock()

    def found(self, path: Path, reason: str) -> None:
        """Record (and log, the first time) that `path` cannot be used."""
        with self._lock:
            first = path not in self._found
            self._found[path] = reason
        if first:
            log.warning("skipping %s: %s", path, reason)

    def cleared(self, path: Path) -> None:
        """`path` is readable again, or gone."""
        with self._lock:
            self._found.pop(path, None)

    def report(self, root: Path) -> list[str]:
        """One line per problem, paths relative to the data dir `root`."""
        with self._lock:
            found = sorted(self._found.items())
        lines = []
        for path, reason in found:
            shown = path.relative_to(root) if path.is_relative_to(root) else path.name
            lines.append(f"{shown}: {reason}")
        return lines


def read_record(path: Path, record: type[T], problems: Problems) -> T | None:
    """The dataclass `record` stored as JSON at `path`; None (recorded in `problems`) when the
    file is missing its fields, has others, or is not JSON at all."""
    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        names = {field.name for field in dataclasses.fields(record)}
        required = {
            field.name
            for field in dataclasses.fields(record)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
        if missing := sorted(required - data.keys()):
            raise TypeError(f"missing field(s) {', '.join(missing)}")
        if unknown := sorted(data.keys() - names):
            raise TypeError(f"unknown field(s) {', '.join(unknown)}")
        value = record(**data)
    except FileNotFoundError:
        problems.cleared(path)
        return None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        problems.found(path, f"unreadable metadata ({exc}); fix or remove the file")
        return None
    problems.cleared(path)
    return value


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move `path` into `quarantine_dir` (same file system: a rename), under a name that never
    overwrites an earlier one; log where it went and why."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-{path.name}"
    os.replace(path, target)
    log.warning("moved %s to %s: %s", path, target, reason)
    return target
