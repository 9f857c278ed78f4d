"""Predictions and evaluations: decode images, convert data like the training data, run the
model.

Decoding and inference are CPU work and run in the threadpool, never in the event loop. At most
`predict_concurrency` predictions run at once; one more is refused at once with 503 rather than
queued. Loaded models are kept in a small LRU cache (models are immutable, so a cached network
never goes stale; a deleted model is evicted).
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.errors import BusyError, ConflictError, InvalidRequestError
from app.storage.models import ModelMeta, ModelStore
from cnn_core import ModelFileError, Network
from cnn_core.datasets import Dataset, images_to_array, open_image


def rank(probabilities: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict]:
    """Per row of (N, K) probabilities: the best class and the `top_k` best, as plain floats."""
    if probabilities.shape[1] == 1:  # one sigmoid unit: P(class 1)
        probabilities = np.hstack([1 - probabilities, probabilities])
    k = min(top_k, probabilities.shape[1])
    results = []
    for row in probabilities.astype(np.float64):
        order = np.argsort(-row, kind="stable")[:k]
        scores = [
            {"label": int(i), "class_name": classes[i], "probability": float(row[i])} for i in order
        ]
        results.append({**scores[0], "top_k": scores})
    return results


def evaluation_data(model: ModelMeta, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's (X, y) as the model sees them, or a 422 saying why it cannot be scored.

    Labels are matched by class name, so a dataset may hold a subset of the model's classes in
    any order. X is rescaled when the two were scaled differently (both scalings are recorded
    as the factor applied to 8-bit pixels, `image_scale`).
    """
    if list(dataset.input_shape) != list(model.input_shape):
        raise InvalidRequestError(
            f"the dataset's images are {list(dataset.input_shape)} (channels, height, width) "
            f"but the model takes {model.input_shape}: evaluate on a dataset of that shape"
        )
    unknown = [name for name in dataset.class_names if name not in model.classes]
    if unknown:
        raise InvalidRequestError(
            f"the dataset has classes the model does not know: {unknown[:10]}; the model's "
            f"classes are {model.classes[:20]}"
        )
    labels = np.array([model.classes.index(name) for name in dataset.class_names], np.intp)
    X = dataset.X
    ratio = _image_scale(model.preprocessing) / _image_scale(dataset.preprocessing)
    if ratio != 1:
        X = X * np.float32(ratio)
    return X, labels[dataset.y]


def _image_scale(preprocessing: dict) -> float:
    return float(preprocessing.get("image_scale", 1.0))


class Predictor:
    """Runs predictions with bounded concurrency over an LRU cache of loaded models."""

    def __init__(
        self, models: ModelStore, *, cache_size: int, concurrency: int, max_image_pixels: int
    ) -> None:
        self._models = models
        self._cache: OrderedDict[str, Network] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._concurrency = concurrency
        self._in_flight = 0
        self._max_pixels = max_image_pixels

    def network(self, model_id: str) -> Network:
        """The model's network, from the cache or loaded (409 when its file is unusable)."""
        with self._cache_lock:
            if model_id in self._cache:
                self._cache.move_to_end(model_id)
                return self._cache[model_id]
        try:
            net = self._models.load(model_id)
        except ModelFileError:
            raise ConflictError("Model file is missing or corrupt") from None
        with self._cache_lock:
            self._cache[model_id] = net
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return net

    def evict(self, model_id: str) -> None:
        """Forget a cached model (it was deleted)."""
        with self._cache_lock:
            self._cache.pop(model_id, None)

    def refuse_if_busy(self) -> None:
        """503 when every slot is taken. Called before the request body is read, so a request
        that would be refused anyway costs no parsing; the slot itself is taken only once the
        body is in (`_slot`), so a slow upload never holds one."""
        if self._in_flight >= self._concurrency:
            raise BusyError(
                "Server busy: too many predictions in flight; retry after Retry-After seconds"
            )

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold one of the concurrency slots, or refuse with 503 when none is free.

        Entered on the event loop only, so the counter needs no lock.
        """
        self.refuse_if_busy()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def _predict_images(
        self, model: ModelMeta, files: list[tuple[str, bytes]], top_k: int
    ) -> list[dict]:
        # A file that cannot be used raises a DatasetError naming it, which app.errors answers
        # with 413 (over the pixel cap), 415 (not PNG or JPEG) or 400 (truncated or corrupt).
        images = [open_image(data, max_pixels=self._max_pixels, name=name) for name, data in files]
        X = images_to_array(images, model.input_shape, model.preprocessing)
        return rank(self.network(model.id).predict_proba(X), model.classes, top_k)

    def _predict_array(self, model: ModelMeta, X: np.ndarray, top_k: int) -> list[dict]:
        return rank(self.network(model.id).predict_proba(X), model.classes, top_k)

    def _evaluate(self, model: ModelMeta, load_dataset: Callable[[], Dataset]) -> dict:
        X, y = evaluation_data(model, load_dataset())
        return self.network(model.id).evaluate(X, y).to_dict(model.classes)

    async def evaluate(self, model: ModelMeta, load_dataset: Callable[[], Dataset]) -> dict:
        """Score the model on the labelled dataset `load_dataset()` returns (see
        `cnn_core.evaluation`). Loading and scoring run in the threadpool and hold one of the
        prediction slots, so evaluations too are bounded in number."""
        with self._slot():
            return await run_in_threadpool(self._evaluate, model, load_dataset)

    async def predict_images(
        self, model: ModelMeta, files: list[tuple[str, bytes]], top_k: int
    ) -> list[dict]:
        """Predict (file name, bytes) pairs of PNG/JPEG images."""
        with self._slot():
            return await run_in_threadpool(self._predict_images, model, files, top_k)

    async def predict_array(self, model: ModelMeta, X: np.ndarray, top_k: int) -> list[dict]:
        """Predict a float (N, C, H, W) array already in the model's input scale."""
        with self._slot():
            return await run_in_threadpool(self._predict_array, model, X, top_k)
