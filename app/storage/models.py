"""The model store: `models/<id>.npz` (cnn_core's own format) plus `<id>.json` metadata.

As for datasets, the JSON is written last and removed first, so a model is listed only when its
weights are complete. Models are immutable once stored, so their metadata is cached in memory
(predictions look it up on every request). A metadata file that cannot be read is skipped and
reported (`app.storage.integrity`); weights without metadata are quarantined, never deleted.
"""

import contextlib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from app.storage.files import atomic_write_json
from app.storage.integrity import Problems, quarantine, read_record
from cnn_core import Network


@dataclass(frozen=True)
class ModelMeta:
    id: str
    job_id: str
    name: str | None
    dataset_id: str
    created_at: float
    architecture: dict[str, Any]
    input_shape: list[int]
    classes: list[str]
    param_count: int
    macs: int
    layers: list[dict[str, Any]]
    metrics: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]


class ModelStore(Protocol):
    """What the service needs from a model store."""

    def list_all(self) -> list[ModelMeta]: ...
    def get(self, model_id: str) -> ModelMeta | None: ...
    def cached(self, model_id: str) -> ModelMeta | None: ...
    def save(self, meta: ModelMeta, net: Network) -> None: ...
    def load(self, model_id: str) -> Network: ...
    def file_path(self, model_id: str) -> Path: ...
    def delete(self, model_id: str) -> None: ...
    def quarantine(self, model_id: str, reason: str) -> None: ...


class FileModelStore:
    """`ModelStore` on a directory of npz + JSON pairs."""

    def __init__(self, directory: Path, *, quarantine_dir: Path, problems: Problems) -> None:
        self._dir = directory
        self._quarantine = quarantine_dir
        self._problems = problems
        self._cache: dict[str, ModelMeta] = {}
        self._cache_lock = threading.Lock()

    def _meta_path(self, model_id: str) -> Path:
        return self._dir / f"{model_id}.json"

    def file_path(self, model_id: str) -> Path:
        """The model's npz file, as served for download."""
        return self._dir / f"{model_id}.npz"

    def list_all(self) -> list[ModelMeta]:
        """Every readable model, oldest first."""
        models = [read_record(p, ModelMeta, self._problems) for p in self._dir.glob("*.json")]
        return sorted((m for m in models if m is not None), key=lambda m: m.created_at)

    def get(self, model_id: str) -> ModelMeta | None:
        """The model's metadata, or None."""
        with self._cache_lock:
            if model_id not in self._cache:
                meta = read_record(self._meta_path(model_id), ModelMeta, self._problems)
                if meta is None:
                    return None
                self._cache[model_id] = meta
            return self._cache[model_id]

    def cached(self, model_id: str) -> ModelMeta | None:
        """The model's metadata if it is already in memory, else None: no I/O and no lock
        (`get` holds it while reading a file; one dict lookup is atomic), so the event loop
        may call it."""
        return self._cache.get(model_id)

    def save(self, meta: ModelMeta, net: Network) -> None:
        """Write the weights (with the metadata inside), then publish the metadata file."""
        net.metadata = asdict(meta)
        net.save(self.file_path(meta.id))
        atomic_write_json(self._meta_path(meta.id), asdict(meta))

    def load(self, model_id: str) -> Network:
        """The model's network, ready to predict."""
        return Network.load(self.file_path(model_id))

    def delete(self, model_id: str) -> None:
        """Unpublish the model, then remove its weights."""
        with self._cache_lock:
            self._meta_path(model_id).unlink(missing_ok=True)
            self._cache.pop(model_id, None)
        self.file_path(model_id).unlink(missing_ok=True)

    def quarantine(self, model_id: str, reason: str) -> None:
        """Unpublish the model and move its files into the quarantine folder."""
        with self._cache_lock:
            self._cache.pop(model_id, None)
            for path in (self._meta_path(model_id), self.file_path(model_id)):
                # Another server on the shared volume may have moved it a moment ago.
                with contextlib.suppress(FileNotFoundError):
                    quarantine(path, self._quarantine, reason)
                self._problems.cleared(path)

    def quarantine_orphans(self) -> None:
        """Move aside weights whose metadata was never written (a worker killed mid-publish)."""
        for weights in self._dir.glob("*.npz"):
            if not self._meta_path(weights.stem).exists():
                quarantine(weights, self._quarantine, "model weights without metadata")
