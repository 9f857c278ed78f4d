"""The dataset store: uploaded datasets as `datasets/<id>.npz` (X, y) plus `<id>.json` metadata.

X is stored as the dataset's pixels: uint8 for 8-bit sources (image zips, uint8 npz and IDX),
which the network sees multiplied by the metadata's `preprocessing["scale"]`, float32 for float
sources. Files written before 8-bit pixels were kept hold float32 X, already scaled; they load
as float pixels, exactly as they trained before.

The JSON is written last, so a dataset exists exactly when its metadata file does. The built-in
`mnist-sample` ships with cnn_core; it is always listed and cannot be deleted. Datasets never
change once stored, so their metadata is cached in memory, as models' is (every job submission
looks it up); deleting a dataset evicts it. A metadata file that cannot be read is skipped and
reported (`app.storage.integrity`); arrays without metadata are quarantined, never deleted.
"""

import threading
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.ids import BUILTIN_DATASET_ID
from app.storage.files import atomic_write_json
from app.storage.integrity import Problems, quarantine, read_record
from cnn_core.datasets import Dataset, load_mnist_sample
from cnn_core.files import atomic_write


@dataclass(frozen=True)
class DatasetMeta:
    id: str
    name: str
    n_samples: int
    input_shape: list[int]
    classes: list[str]
    class_counts: list[int]
    preprocessing: dict[str, Any]
    created_at: float
    builtin: bool = False


def describe(dataset_id: str, name: str, dataset: Dataset, *, builtin: bool = False) -> DatasetMeta:
    """The metadata of `dataset` as stored and served."""
    return DatasetMeta(
        id=dataset_id,
        name=name,
        n_samples=int(dataset.n_samples),
        input_shape=[int(d) for d in dataset.input_shape],
        classes=list(dataset.class_names),
        class_counts=[int(c) for c in dataset.class_counts()],
        preprocessing=dict(dataset.preprocessing),
        created_at=time.time(),
        builtin=builtin,
    )


class DatasetStore(Protocol):
    """What the service needs from a dataset store."""

    def list_all(self) -> list[DatasetMeta]: ...
    def get(self, dataset_id: str) -> DatasetMeta | None: ...
    def create(self, dataset_id: str, name: str, dataset: Dataset) -> DatasetMeta: ...
    def load(self, dataset_id: str) -> Dataset: ...
    def delete(self, dataset_id: str) -> None: ...


class FileDatasetStore:
    """`DatasetStore` on a directory of npz + JSON pairs, plus the built-in sample."""

    def __init__(self, directory: Path, *, quarantine_dir: Path, problems: Problems) -> None:
        self._dir = directory
        self._quarantine = quarantine_dir
        self._problems = problems
        self._cache: dict[str, DatasetMeta] = {}
        self._cache_lock = threading.Lock()

    @cached_property
    def _builtin(self) -> DatasetMeta:
        meta = describe(
            BUILTIN_DATASET_ID, "MNIST sample (built in)", load_mnist_sample(), builtin=True
        )
        return DatasetMeta(**{**asdict(meta), "created_at": 0.0})

    def _meta_path(self, dataset_id: str) -> Path:
        return self._dir / f"{dataset_id}.json"

    def _data_path(self, dataset_id: str) -> Path:
        return self._dir / f"{dataset_id}.npz"

    def list_all(self) -> list[DatasetMeta]:
        """Every readable dataset, the built-in one first, then by creation time."""
        stored = [read_record(p, DatasetMeta, self._problems) for p in self._dir.glob("*.json")]
        readable = (m for m in stored if m is not None)
        return [self._builtin, *sorted(readable, key=lambda m: m.created_at)]

    def get(self, dataset_id: str) -> DatasetMeta | None:
        """The dataset's metadata, or None."""
        if dataset_id == BUILTIN_DATASET_ID:
            return self._builtin
        with self._cache_lock:
            if dataset_id not in self._cache:
                meta = read_record(self._meta_path(dataset_id), DatasetMeta, self._problems)
                if meta is None:
                    return None
                self._cache[dataset_id] = meta
            return self._cache[dataset_id]

    def create(self, dataset_id: str, name: str, dataset: Dataset) -> DatasetMeta:
        """Store `dataset` under `dataset_id`: arrays first, then the metadata that publishes it."""
        meta = describe(dataset_id, name, dataset)
        atomic_write(
            self._data_path(dataset_id),
            lambda file: np.savez(file, X=dataset.pixels, y=dataset.y),
        )
        atomic_write_json(self._meta_path(dataset_id), asdict(meta))
        return meta

    def load(self, dataset_id: str) -> Dataset:
        """The dataset's arrays, class names and preprocessing."""
        if dataset_id == BUILTIN_DATASET_ID:
            return load_mnist_sample()
        meta = self.get(dataset_id)
        with np.load(self._data_path(dataset_id), allow_pickle=False) as arrays:
            return Dataset(
                pixels=arrays["X"],
                y=arrays["y"],
                class_names=meta.classes,
                preprocessing=meta.preprocessing,
            )

    def delete(self, dataset_id: str) -> None:
        """Remove the dataset: metadata first (unpublish), then the arrays."""
        with self._cache_lock:
            self._meta_path(dataset_id).unlink(missing_ok=True)
            self._cache.pop(dataset_id, None)
        self._data_path(dataset_id).unlink(missing_ok=True)

    def quarantine_orphans(self) -> None:
        """Move aside arrays whose metadata was never written (a crash mid-upload)."""
        for data in self._dir.glob("*.npz"):
            if not self._meta_path(data.stem).exists():
                quarantine(data, self._quarantine, "dataset arrays without metadata")
