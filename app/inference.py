"""Predictions and evaluations: decode images, convert data like the training data, run the model.

Decoding and inference are CPU work and run in the threadpool, except for requests too small to be
worth a thread: a few small images on a small model that is already loaded (`SMALL_REQUEST_*`; a
digit on LeNet-5 is about 0.2 ms of work) are predicted on the event loop, since handing them to a
thread and back costs as much as the work itself, and much more while training keeps the cores
busy. At most `predict_concurrency` predictions are in flight at once, counted from before the
request body is read (multipart or JSON), so parsing is bounded too; one more is refused at once
with 503 rather than queued. A request may declare at most `max_request_pixels` pixels in all
(checked from the headers before anything is decoded), and its images are decoded, converted and
shrunk one at a time, large ones in a single thread server-wide: the memory predictions need is
that of one large image plus the models' small input arrays, whatever the files declare. Inputs
that are not finite in the model's dtype (1e300 in float32) are refused, and outputs that are not
finite are never sent. Loaded models are kept in a small LRU cache (models are immutable, so a
cached network never goes stale; a deleted model is evicted).
"""

import io
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.errors import BusyError, ConflictError, InvalidRequestError, PayloadTooLargeError
from app.metrics import PREDICTIONS
from app.storage.models import ModelMeta, ModelStore
from cnn_core import ModelFileError, Network
from cnn_core.datasets import Dataset, convert_images, open_image
from cnn_core.datasets.images import IMAGE_SIGNATURES


def rank(probabilities: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict]:
    """Per row of (N, K) probabilities: the best class and the `top_k` best, as plain floats."""
    if not np.isfinite(probabilities).all():
        bad = int(np.flatnonzero(~np.isfinite(probabilities).all(axis=1))[0])
        raise InvalidRequestError(
            f"the model's output for input {bad} is not a finite number: the input is far "
            f"outside the scale of the training data"
        )
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
            f"but the model takes {model.input_shape}: evaluate on a dataset of that shape",
            ("body", "dataset_id"),
        )
    unknown = [name for name in dataset.class_names if name not in model.classes]
    if unknown:
        raise InvalidRequestError(
            f"the dataset has classes the model does not know: {unknown[:10]}; the model's "
            f"classes are {model.classes[:20]}",
            ("body", "dataset_id"),
        )
    labels = np.array([model.classes.index(name) for name in dataset.class_names], np.intp)
    X = dataset.X
    ratio = _image_scale(model.preprocessing) / _image_scale(dataset.preprocessing)
    if ratio != 1:
        X = X * np.float32(ratio)
    return X, labels[dataset.y]


def _image_scale(preprocessing: dict) -> float:
    return float(preprocessing.get("image_scale", 1.0))


# Above this many pixels an image is decoded and converted in one dedicated thread, one at a
# time server-wide: a 4096x4096 RGBA image needs ~250 MB while it is converted, so concurrent
# predictions of large images would add up, and memory freed in the many threadpool threads
# stays in each thread's malloc arena (measured: 4 concurrent requests left 640 MB resident).
# Small images (a 28x28 digit) never wait.
LARGE_IMAGE_PIXELS = 1024 * 1024


# A request within all three bounds is predicted on the event loop (see the module docstring);
# together they keep the loop busy for about a millisecond at most on this machine.
SMALL_REQUEST_BYTES = 64 * 1024  # the files' size: their headers are read on the loop
SMALL_REQUEST_PIXELS = 64 * 64  # what the headers declare: decoding and conversion
SMALL_REQUEST_MACS = 2_000_000  # the model's multiply-adds times the images: the forward pass


PNG_SIGNATURE = IMAGE_SIGNATURES[0]


def declared_pixels(data: bytes) -> int:
    """Width x height as the image's header declares it, without decoding the pixels; 0 when
    the header is unreadable (`open_image` then says what is wrong with the file)."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        # A PNG's first chunk, IHDR, starts with its width and height: read them without PIL.
        width, height = struct.unpack(">II", data[16:24])
        return width * height
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                return probe.width * probe.height
    except Exception:  # any header PIL cannot read: the decoder reports it properly
        return 0


class Predictor:
    """Runs predictions with bounded concurrency over an LRU cache of loaded models."""

    def __init__(
        self,
        models: ModelStore,
        *,
        cache_size: int,
        concurrency: int,
        max_image_pixels: int,
        max_request_pixels: int,
    ) -> None:
        self._models = models
        self._cache: OrderedDict[str, Network] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._concurrency = concurrency
        self._in_flight = 0
        self._max_pixels = max_image_pixels
        self._max_request_pixels = max_request_pixels
        self._large_images = ThreadPoolExecutor(1, thread_name_prefix="large-images")

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

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the concurrency slots, or refuse with 503 when none is free. Taken
        before the request body is read, so refused requests cost no parsing and at most
        `concurrency` bodies are parsed at once.

        Entered on the event loop only, so the counter needs no lock.
        """
        if self._in_flight >= self._concurrency:
            raise BusyError(
                "Server busy: too many predictions in flight; retry after Retry-After seconds"
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def _declared(self, files: list[tuple[str, bytes]]) -> list[int]:
        """The pixels each file's header declares; 413 when they exceed the request's cap."""
        declared = [declared_pixels(data) for _, data in files]
        if sum(declared) > self._max_request_pixels:
            raise PayloadTooLargeError(
                f"the images of this request declare {sum(declared):,} pixels in all, over the "
                f"limit of {self._max_request_pixels:,}: send fewer or smaller images per request"
            )
        return declared

    def _predict_images(
        self,
        model: ModelMeta,
        files: list[tuple[str, bytes]],
        top_k: int,
        invert: str,
        declared: list[int] | None = None,
    ) -> list[dict]:
        # A file that cannot be used raises a DatasetError naming it, which app.errors answers
        # with 413 (over the pixel cap), 415 (not PNG or JPEG) or 400 (truncated or corrupt).
        if declared is None:
            declared = self._declared(files)
        c, h, w = model.input_shape
        X = np.empty((len(files), c, h, w), dtype=np.float32)
        inverted = []
        for i, ((name, data), pixels) in enumerate(zip(files, declared, strict=True)):
            if pixels > LARGE_IMAGE_PIXELS:
                job = self._large_images.submit(self._convert, model, name, data, invert)
                X[i], flipped = job.result()
            else:
                X[i], flipped = self._convert(model, name, data, invert)
            inverted.append(flipped)
        results = self._predict_array(model, X, top_k)
        for result, (name, _), flipped in zip(results, files, inverted, strict=True):
            result.update(filename=name, inverted=flipped)
        return results

    def _convert(
        self, model: ModelMeta, name: str, data: bytes, invert: str
    ) -> tuple[np.ndarray, bool]:
        """One image as the model's (C, H, W) input, and whether it was inverted."""
        with open_image(data, max_pixels=self._max_pixels, name=name) as image:
            X, inverted = convert_images([image], model.input_shape, model.preprocessing, invert)
        return X[0], inverted[0]

    def close(self) -> None:
        """Stop the large-image thread (at shutdown)."""
        self._large_images.shutdown(cancel_futures=True)

    def _predict_array(self, model: ModelMeta, X: np.ndarray, top_k: int) -> list[dict]:
        net = self.network(model.id)
        with np.errstate(over="ignore", invalid="ignore"):
            X = X.astype(net.dtype, copy=False)
        if not np.isfinite(X).all():
            raise InvalidRequestError(
                f"instances hold values that are not finite in the model's {net.dtype.name} "
                f"(NaN, infinite, or beyond +-{np.finfo(net.dtype).max:.3g}): send inputs in "
                f"the training data's scale",
                ("body", "instances"),
                kind="out_of_range",
            )
        with np.errstate(all="ignore"):  # an overflow shows as a non-finite output: refused
            probabilities = net.predict_proba(X)
        results = rank(probabilities, model.classes, top_k)
        for index, result in enumerate(results):
            result.update(index=index, filename=None, inverted=False)
        return results

    def _evaluate(self, model: ModelMeta, load_dataset: Callable[[], Dataset]) -> dict:
        X, y = evaluation_data(model, load_dataset())
        return self.network(model.id).evaluate(X, y).to_dict(model.classes)

    async def evaluate(self, model: ModelMeta, load_dataset: Callable[[], Dataset]) -> dict:
        """Score the model on the labelled dataset `load_dataset()` returns (see
        `cnn_core.evaluation`), inside `slot()`: loading and scoring run in the threadpool,
        and evaluations count among the predictions in flight."""
        return await run_in_threadpool(self._evaluate, model, load_dataset)

    async def predict_images(
        self, model: ModelMeta, files: list[tuple[str, bytes]], top_k: int, invert: str
    ) -> list[dict]:
        """Predict (file name, bytes) pairs of PNG/JPEG images (inside `slot()`), inverting
        them as `invert` ("auto", "true", "false") says; a small request on the event loop."""
        with PREDICTIONS.time():
            size = sum(len(data) for _, data in files)
            if (
                size > SMALL_REQUEST_BYTES
                or model.macs * len(files) > SMALL_REQUEST_MACS
                or model.id not in self._cache  # loading it reads a file: not on the loop
            ):
                return await run_in_threadpool(self._predict_images, model, files, top_k, invert)
            declared = self._declared(files)
            if sum(declared) > SMALL_REQUEST_PIXELS:
                return await run_in_threadpool(
                    self._predict_images, model, files, top_k, invert, declared
                )
            return self._predict_images(model, files, top_k, invert, declared)

    async def predict_array(self, model: ModelMeta, X: np.ndarray, top_k: int) -> list[dict]:
        """Predict a float (N, C, H, W) array already in the model's input scale (inside
        `slot()`)."""
        with PREDICTIONS.time():
            return await run_in_threadpool(self._predict_array, model, X, top_k)
