"""Atomic, durable file writes and the sweep of the temp files dead writers left."""

import json
import math
from pathlib import Path

import pytest

from app.storage.files import atomic_write_json, remove_temp_files_of, sweep_temp_files


def test_atomic_writes_leave_no_temp_files_and_sweep_removes_dead_ones(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    (tmp_path / ".tmp-dead-a.json").write_text("{")
    (tmp_path / ".b.npz.x1y2.tmp").write_text("")
    sweep_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(ValueError, match="Out of range float"):
        atomic_write_json(tmp_path / "c.json", {"x": math.nan})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_killed_writers_temp_files_are_removed_and_no_others(tmp_path: Path) -> None:
    target = tmp_path / "job.npz"
    for name in (".job.npz.abc123.tmp", ".other.npz.def456.tmp", "job.npz"):
        (tmp_path / name).write_bytes(b"x")
    remove_temp_files_of(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.def456.tmp", "job.npz"]
