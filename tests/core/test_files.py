"""cnn_core.files: a write that fails leaves the previous file and no temp file; an archive
gives back its arrays and metadata exactly. (Refusals of bad archives: test_network's load.)"""

import numpy as np
import pytest

from cnn_core.files import atomic_write, load_archive, save_archive


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "model.npz"
    atomic_write(path, lambda file: file.write(b"old"))

    def torn(file):
        file.write(b"half of the new")
        raise KeyboardInterrupt  # a kill between two writes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, torn)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    atomic_write(path, lambda file: file.write(b"new"))
    assert path.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_an_archive_gives_back_its_arrays_and_metadata(tmp_path):
    arrays = {"0.W": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array([3])}
    meta = {"format": "cnn-test", "format_version": 2, "classes": ["cat", "dog"]}
    save_archive(tmp_path / "a.npz", arrays, meta)
    loaded, loaded_meta = load_archive(tmp_path / "a.npz", "cnn-test", 2)
    assert loaded_meta == meta and sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
