"""The predictor on its own: its bound on predictions in flight, its model cache, ranking."""

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from app.errors import BusyError
from app.inference import Predictor, rank
from cnn_core import Network
from tests.support.builders import TINY_ARCHITECTURE


def test_predictions_beyond_the_concurrency_limit_get_503_at_once() -> None:
    release = threading.Event()

    class SlowStore:
        def load(self, model_id: str) -> Network:
            release.wait(5)
            return Network.from_config(TINY_ARCHITECTURE)

    predictor = Predictor(
        SlowStore(), cache_size=1, concurrency=1, max_image_pixels=100, max_request_pixels=100
    )
    model = SimpleNamespace(id="m", classes=[str(d) for d in range(10)])
    batch = np.zeros((1, 1, 28, 28), np.float32)

    async def predict() -> list[dict]:
        with predictor.slot():
            return await predictor.predict_array(model, batch, 1)

    async def two_at_once() -> None:
        first = asyncio.create_task(predict())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(BusyError):
            await predict()
        assert time.monotonic() - started < 0.1
        release.set()
        assert len(await first) == 1

    asyncio.run(two_at_once())


class CountingStore:
    """A model store that counts its loads."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    def load(self, model_id: str) -> Network:
        self.loads.append(model_id)
        return Network.from_config(TINY_ARCHITECTURE, seed=len(self.loads))


def test_models_are_loaded_once_kept_least_recently_used_and_evicted_on_delete() -> None:
    store = CountingStore()
    predictor = Predictor(
        store, cache_size=2, concurrency=1, max_image_pixels=100, max_request_pixels=100
    )
    batch = np.zeros((1, 1, 28, 28), np.float32)

    def predict(model_id: str) -> list[dict]:
        model = SimpleNamespace(id=model_id, classes=[str(d) for d in range(10)])
        return asyncio.run(predictor.predict_array(model, batch, 1))

    for model_id in ("a", "b", "a", "c", "a", "b"):
        predict(model_id)
    assert store.loads == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    predictor.evict("a")
    predict("a")
    assert store.loads[-1] == "a" and len(store.loads) == 5


def test_rank_gives_the_best_classes_first_and_reads_one_sigmoid_unit_as_two_classes() -> None:
    [ranked] = rank(np.array([[0.1, 0.7, 0.2]]), ["x", "y", "z"], top_k=2)
    assert ranked["label"] == 1 and ranked["class_name"] == "y"
    assert [p["label"] for p in ranked["top_k"]] == [1, 2]
    [sigmoid] = rank(np.array([[0.25]]), ["neg", "pos"], top_k=5)
    assert sigmoid["class_name"] == "neg" and sigmoid["probability"] == pytest.approx(0.75)
    assert [p["class_name"] for p in sigmoid["top_k"]] == ["neg", "pos"]
