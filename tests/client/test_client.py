"""The client's HTTP behaviour on scripted answers: retries honouring Retry-After, one error
type with the server's message, timeouts that suit event streams, and a stream that ends early
being resumed where it stopped."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import formatdate

import httpx
import pytest

from cnn_client import ApiError, Client, CostsEvent, EndEvent, ProgressEvent
from tests.support.builders import TINY_ARCHITECTURE, holdout
from tests.support.server import REPO

JOB = {
    "id": "j1",
    "name": None,
    "status": "running",
    "dataset_id": "mnist-sample",
    "architecture": {},
    "training": {"epochs": 1},
    "created_at": "2026-12-01T20:00:00Z",
    "started_at": None,
    "finished_at": None,
    "queue_position": None,
    "progress": {
        "epoch": 1,
        "epochs": 1,
        "iteration": 2,
        "iterations_per_epoch": 4,
        "total_iterations": 4,
        "fraction": 0.5,
        "eta_seconds": 1.0,
    },
    "metrics": None,
    "error": None,
    "model_id": None,
    "a_field_from_a_newer_server": [1, 2, 3],
}


def scripted(answers: list[Callable[[httpx.Request], httpx.Response]]) -> tuple[Client, list]:
    """A client whose requests get `answers` in turn; the requests it sent."""
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers[len(sent) - 1](request)

    return Client("http://cnn.test", api_key="k", transport=httpx.MockTransport(handle)), sent


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the client waited, without waiting."""
    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def test_429_is_retried_after_the_servers_retry_after(sleeps: list[float]) -> None:
    client, sent = scripted(
        [
            lambda r: httpx.Response(429, headers={"Retry-After": "5"}, json={"detail": "full"}),
            lambda r: httpx.Response(202, json={**JOB, "status": "queued"}),
        ]
    )
    job = client.submit_job("mnist-sample", "lenet5", {"epochs": 1})
    assert job.status == "queued" and sleeps == [5.0]
    assert [json.loads(r.content) for r in sent] == 2 * [
        {"dataset_id": "mnist-sample", "architecture": "lenet5", "training": {"epochs": 1}}
    ]
    assert sent[0].headers["Authorization"] == "Bearer k"


def test_503_retries_run_out_into_an_api_error_with_the_servers_message(
    sleeps: list[float],
) -> None:
    busy = {"detail": "Server busy: too many predictions in flight"}
    date = formatdate(time.time() + 3600, usegmt=True)  # an HTTP date an hour away: capped
    client, sent = scripted(
        [lambda r: httpx.Response(503, headers={"Retry-After": date}, json=busy)] * 4
    )
    client.max_retry_wait = 30
    with pytest.raises(ApiError) as caught:
        client.predict("m1", [("a.png", b"...")])
    assert caught.value.status == 503 and caught.value.message == busy["detail"]
    assert str(caught.value) == f"503: {busy['detail']}"
    assert len(sent) == 4 and sleeps == [30.0] * 3


def test_a_422_gives_its_sentence_and_keeps_its_problems() -> None:
    errors = [
        {"loc": ["body", "training", "epochs"], "msg": "Input should be >= 1", "type": "x"},
        {"loc": ["body", "dataset_id"], "msg": "Field required", "type": "missing"},
    ]
    detail = "training.epochs: input should be >= 1\n(1 more problem in errors)"
    client, _ = scripted([lambda r: httpx.Response(422, json={"detail": detail, "errors": errors})])
    with pytest.raises(ApiError) as caught:
        client.submit_job("", "lenet5", {"epochs": 0})
    assert (
        caught.value.message == "training.epochs: input should be >= 1 (1 more problem in errors)"
    )
    assert caught.value.errors == errors


def test_an_unreachable_server_is_an_api_error_without_status() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    client, _ = scripted([refuse])
    with pytest.raises(ApiError) as caught:
        client.health()
    assert caught.value.status is None
    assert caught.value.message == "cannot reach http://cnn.test: Connection refused"


def sse(*events: tuple[str, str | None, dict]) -> bytes:
    return b"".join(
        (
            f"event: {kind}\n"
            + (f"id: {event_id}\n" if event_id else "")
            + f"data: {json.dumps(data)}\n\n"
        ).encode()
        for kind, event_id, data in events
    )


def costs(first: int, last: int) -> dict:
    points = [{"epoch": 1, "iteration": i, "cost": 1 / i} for i in range(first, last + 1)]
    return {"status": "running", "iterations": points, "epochs": [], "last_iteration": last}


def test_a_stream_that_ends_early_resumes_after_the_last_point(sleeps: list[float]) -> None:
    stream = {"Content-Type": "text/event-stream"}
    done = {**JOB, "status": "succeeded", "model_id": "m1"}
    client, sent = scripted(
        [
            lambda r: httpx.Response(
                200,
                headers=stream,
                content=sse(("progress", None, JOB), ("costs", "2", costs(1, 2))),
            ),
            lambda r: httpx.Response(
                200, headers=stream, content=sse(("costs", "4", costs(3, 4)), ("end", None, done))
            ),
        ]
    )
    events = list(client.follow("j1"))
    assert [type(e) for e in events] == [ProgressEvent, CostsEvent, CostsEvent, EndEvent]
    assert [
        p.iteration for e in events if isinstance(e, CostsEvent) for p in e.data.iterations
    ] == [
        1,
        2,
        3,
        4,
    ]
    assert "last-event-id" not in sent[0].headers and sent[1].headers["Last-Event-ID"] == "2"
    assert events[-1].data.model_id == "m1" and len(sleeps) == 1


def test_stream_timeouts_outlast_the_servers_keepalive_pings(sleeps: list[float]) -> None:
    from fastapi.sse import _PING_INTERVAL  # the server's pings on an idle event stream

    stream = {"Content-Type": "text/event-stream"}
    done = {**JOB, "status": "succeeded", "model_id": "m1"}

    def ended(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=stream, content=sse(("end", None, done)))

    client, sent = scripted([ended, ended, lambda r: httpx.Response(200, json=JOB)])
    list(client.follow("j1"))
    list(client.follow("j1", timeout=5))
    client.get_job("j1")
    following, bounded, request = (r.extensions["timeout"] for r in sent)
    assert following["read"] >= 3 * _PING_INTERVAL  # a link is given up after missed pings
    assert 0 < bounded["read"] <= 5  # no read outlasts the caller's own timeout
    assert request["read"] >= 60 and request["connect"] <= 10  # long uploads, quick refusals


def test_the_client_and_the_command_import_no_server_or_training_code() -> None:
    probe = (
        "import sys, cnn_client, cnn_client.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'app', 'cnn_core', 'fastapi', 'starlette', 'uvicorn', 'numpy'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_validate_and_predict_instances_on_the_live_server(client: Client, model_id: str) -> None:
    summary = client.validate_architecture(TINY_ARCHITECTURE)
    assert [layer.type for layer in summary.layers][-1] == "dense" and summary.n_classes == 10
    assert summary.param_count == sum(layer.param_count for layer in summary.layers)
    broken = {**TINY_ARCHITECTURE, "input_shape": [1, 4, 4]}
    with pytest.raises(ApiError) as caught:
        client.validate_architecture(broken)
    assert caught.value.status == 422 and "layer 0 (conv)" in caught.value.message

    X, y = holdout()
    instances = (X[:3, None] / 255.0).tolist()  # (C, H, W) in the training data's scale
    predictions = client.predict_instances(model_id, instances, top_k=1).predictions
    assert len(predictions) == 3 and all(len(p.top_k) == 1 for p in predictions)
    assert all(p.filename is None for p in predictions)


def test_dataset_samples_and_metrics_on_the_live_server(client: Client) -> None:
    sheet = client.dataset_samples("mnist-sample", per_class=2)
    assert sheet.startswith(b"\x89PNG")
    chosen = client.dataset_samples("mnist-sample", index=[5, 0, 7])
    assert chosen.startswith(b"\x89PNG") and chosen != sheet
    with pytest.raises(ApiError) as caught:
        client.dataset_samples("mnist-sample", index=[10**6])
    assert caught.value.status == 422 and "out of range" in caught.value.message
    text = client.metrics()
    assert "# TYPE cnn_http_requests_total counter" in text
    assert 'route="/datasets/{dataset_id}/samples"' in text
