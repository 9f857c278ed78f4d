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
from tests.support.builders import TINY_ARCHITECTURE, holdout, png_bytes


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


def test_small_requests_are_predicted_on_the_event_loop_and_others_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.inference as inference

    X, _ = holdout()
    net = Network.from_config(TINY_ARCHITECTURE)

    class Store:
        def load(self, model_id: str) -> Network:
            return net

    predictor = Predictor(
        Store(), cache_size=1, concurrency=4, max_image_pixels=10**6, max_request_pixels=10**7
    )
    model = SimpleNamespace(
        id="m",
        classes=[str(d) for d in range(10)],
        input_shape=[1, 28, 28],
        macs=100_000,
        preprocessing={"image_scale": 1 / 255},
    )
    threads: list[str] = []
    hand_off = inference.run_in_threadpool

    async def counted(function, *args):
        threads.append(function.__name__)
        return await hand_off(function, *args)

    monkeypatch.setattr(inference, "run_in_threadpool", counted)

    def predict(files: list[tuple[str, bytes]]) -> list[dict]:
        async def run() -> list[dict]:
            with predictor.slot():
                return await predictor.predict_images(model, files, 3, "auto")

        return asyncio.run(run())

    digit = [("digit.png", png_bytes(X[0]))]
    first = predict(digit)  # the model is not loaded yet: loading reads a file, in a thread
    assert threads == ["_predict_images"]
    assert predict(digit) == first and threads == ["_predict_images"]  # loaded: on the loop
    big = [("big.png", png_bytes(np.kron(X[0], np.ones((3, 3), np.uint8))))]  # 84x84 pixels
    many = digit * 21  # 21 x 100,000 multiply-adds
    predict(big)
    predict(many)
    assert threads == ["_predict_images"] * 3
    assert [p["label"] for p in predict(many)] == [first[0]["label"]] * 21
