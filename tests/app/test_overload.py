"""Overload, against a real uvicorn process: the health check stays fast while a job trains and
predictions are in flight, and predictions beyond the concurrency limit are refused at once
with 503 and Retry-After instead of piling up. Request counts are bounded; the latency bounds
are generous (the machine is shared and noisy) and the measured figures are printed."""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np

from tests.support.builders import holdout, png_bytes
from tests.support.server import live_server, submit, wait_for_iteration, wait_for_job


def digit_files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    X, _ = holdout()
    return [("files", (f"{i}.png", png_bytes(X[i]), "image/png")) for i in range(count)]


def train_model(client: httpx.Client) -> str:
    job = wait_for_job(client, submit(client, "mnist-sample", "lenet5", epochs=1)["id"])
    assert job["status"] == "succeeded", job
    return job["model_id"]


def capturing(work: Callable[..., None], errors: list[BaseException]) -> Callable[..., None]:
    """`work`, appending what it raises to `errors` instead of losing it with its thread."""

    def run(*args: object) -> None:
        try:
            work(*args)
        except BaseException as exc:
            errors.append(exc)

    return run


def join_all(threads: list[threading.Thread], errors: list[BaseException]) -> None:
    """Wait for `threads`, then raise the first exception one of them raised."""
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{thread.name} did not finish in 120 s"
    if errors:
        raise errors[0]


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run `work(i)` for i in range(count) in threads that start together; wait for all."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=capturing(run, errors), args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    join_all(threads, errors)


@contextlib.contextmanager
def in_background(work: Callable[[], None]) -> Iterator[None]:
    """Run `work` in a thread during the block; then wait for it and raise what it raised."""
    errors: list[BaseException] = []
    thread = threading.Thread(target=capturing(work, errors))
    thread.start()
    try:
        yield
    finally:
        join_all([thread], errors)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def test_health_p99_stays_under_500ms_while_a_job_trains_and_predictions_are_in_flight(
    tmp_path: Path,
) -> None:
    with live_server(tmp_path / "data", tmp_path / "server.log") as (server, client):
        model_id = train_model(client)
        training = submit(client, "mnist-sample", "lenet5", epochs=200)
        wait_for_iteration(client, training["id"], 20)
        files = digit_files(8)
        statuses: list[int] = []
        health_ms: list[float] = []
        predicting = threading.Event()

        def predict(_: int) -> None:
            with server.client() as own:
                for _ in range(120):
                    response = own.post(f"/models/{model_id}/predict", files=files)
                    statuses.append(response.status_code)

        def probe() -> None:
            with server.client() as own:
                while predicting.is_set() and len(health_ms) < 400:
                    started = time.perf_counter()
                    assert own.get("/health").status_code == 200
                    health_ms.append((time.perf_counter() - started) * 1000)
                    time.sleep(0.01)

        predicting.set()
        with in_background(probe):
            try:
                in_threads(4, predict)
            finally:
                predicting.clear()

        assert client.get(f"/jobs/{training['id']}").json()["status"] == "running"
        p50, p99 = percentile(health_ms, 50), percentile(health_ms, 99)
        print(
            f"/health under load: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(health_ms):.1f} "
            f"ms over {len(health_ms)} probes; {statuses.count(200)} predictions answered, "
            f"{statuses.count(503)} refused"
        )
        assert len(health_ms) >= 50
        # The bound is for a blocked event loop (seconds), not for this shared machine's
        # scheduling noise, which alone has pushed p99 past 200 ms with two cores overcommitted.
        assert p99 < 500
        assert set(statuses) <= {200, 503} and statuses.count(200) > 0


def test_predictions_beyond_the_concurrency_limit_get_503_with_retry_after_at_once(
    tmp_path: Path,
) -> None:
    env = {"CNN_PREDICT_CONCURRENCY": "1"}
    with live_server(tmp_path / "data", tmp_path / "server.log", **env) as (server, client):
        model_id = train_model(client)
        files = digit_files(64)
        results: list[tuple[int, float, str | None]] = []

        def predict(_: int) -> None:
            with server.client() as own:
                for _ in range(15):
                    started = time.perf_counter()
                    response = own.post(f"/models/{model_id}/predict", files=files)
                    results.append(
                        (
                            response.status_code,
                            time.perf_counter() - started,
                            response.headers.get("retry-after"),
                        )
                    )

        in_threads(6, predict)

        served = [seconds for status, seconds, _ in results if status == 200]
        refused = [seconds for status, seconds, _ in results if status == 503]
        print(
            f"{len(served)} served (p50 {1000 * percentile(served, 50):.1f} ms), "
            f"{len(refused)} refused with 503 (p50 {1000 * percentile(refused, 50):.1f} ms, "
            f"max {1000 * max(refused):.1f} ms)"
        )
        assert {status for status, _, _ in results} == {200, 503}
        assert all(
            retry_after and int(retry_after) >= 1
            for status, _, retry_after in results
            if status == 503
        )
        # refused at once (the form is parsed, nothing waits for the slot), not queued
        assert percentile(refused, 50) < 0.25 and max(refused) < 1.0
        # the slot is released: a lone prediction is served again
        assert client.post(f"/models/{model_id}/predict", files=files[:1]).status_code == 200
        assert client.get("/health").status_code == 200
