"""POST/GET /jobs, costs, the cost plot, live events, cancellation and failures."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support.builders import (
    DIVERGING_ARCHITECTURE,
    TINY_ARCHITECTURE,
    digits_npz,
    image_zip_bytes,
)
from tests.support.server import submit, wait_for_iteration, wait_for_job, worker_pids

SGD_10 = {"name": "sgd", "learning_rate": 10}


def strict_json(text: str) -> object:
    """Parse JSON, failing on NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a response")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    """300 uploaded digits."""
    return client.post("/datasets", files={"files": ("d.npz", digits_npz())}).json()["id"]


def test_job_trains_and_publishes_a_model(client: TestClient, dataset_id: str) -> None:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": dataset_id,
            "architecture": TINY_ARCHITECTURE,
            "name": "tiny",
            "training": {"epochs": 2, "batch_size": 32, "validation_split": 0.1},
        },
    )
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["model_id"] is None
    job = wait_for_job(client, job["id"])
    assert job["status"] == "succeeded" and job["error"] is None
    progress = job["progress"]
    assert progress["fraction"] == 1.0 and progress["epoch"] == 2
    assert progress["iteration"] == progress["total_iterations"] == 2 * 9  # 270 / 32 -> 9
    assert job["metrics"]["epoch"] == 2 and 0 <= job["metrics"]["val_accuracy"] <= 1
    model = client.get(f"/models/{job['model_id']}").json()
    assert model["job_id"] == job["id"] and model["name"] == "tiny"


def test_lenet5_preset_adapts_to_the_dataset(client: TestClient) -> None:
    zip_dataset = client.post("/datasets", files={"files": ("d.zip", image_zip_bytes(6))}).json()
    job = submit(client, zip_dataset["id"], "lenet5", epochs=1)
    layers = job["architecture"]["layers"]
    assert job["architecture"]["input_shape"] == [1, 28, 28]
    assert layers[-1] == {"type": "dense", "units": 1, "activation": "sigmoid", "init": "glorot"}
    assert wait_for_job(client, job["id"])["status"] == "succeeded"


def test_costs_every_iteration_and_epoch_then_incremental(
    client: TestClient, dataset_id: str
) -> None:
    job = wait_for_job(client, submit(client, dataset_id, "tiny", epochs=3)["id"])
    costs = client.get(f"/jobs/{job['id']}/costs").json()
    assert costs["status"] == "succeeded"
    assert [i["iteration"] for i in costs["iterations"]] == list(range(1, 28))
    assert [e["epoch"] for e in costs["epochs"]] == [1, 2, 3]
    assert costs["last_iteration"] == 27
    assert set(costs["epochs"][0]) == {
        "epoch",
        "cost",
        "train_accuracy",
        "val_cost",
        "val_accuracy",
        "seconds",
        "learning_rate",
    }
    rate = job["training"]["optimizer"]["learning_rate"]
    assert {e["learning_rate"] for e in costs["epochs"]} == {rate}  # no schedule: constant
    newer = client.get(f"/jobs/{job['id']}/costs", params={"since": 18}).json()
    assert [i["iteration"] for i in newer["iterations"]] == list(range(19, 28))
    assert [e["epoch"] for e in newer["epochs"]] == [3]
    thinned = client.get(f"/jobs/{job['id']}/costs", params={"max_points": 5}).json()
    assert len(thinned["iterations"]) <= 5 and thinned["iterations"][-1]["iteration"] == 27
    assert client.get(f"/jobs/{job['id']}/costs", params={"max_points": 1}).status_code == 422


def test_cost_curve_png(client: TestClient, dataset_id: str) -> None:
    job = wait_for_job(client, submit(client, dataset_id, "tiny")["id"])
    response = client.get(f"/jobs/{job['id']}/costs.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_events_stream_progress_and_costs_until_the_job_ends(
    client: TestClient, dataset_id: str
) -> None:
    job = submit(client, dataset_id, "tiny", epochs=2)
    events = []
    with client.stream("GET", f"/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in response.iter_lines():
            if line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = strict_json(line[6:])
            elif line == "" and event:
                events.append(event)
                event = {}
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "end" and events[-1]["data"]["status"] == "succeeded"
    assert "progress" in kinds
    streamed = [
        i["iteration"] for e in events if e["event"] == "costs" for i in e["data"]["iterations"]
    ]
    assert streamed == list(range(1, 19))


def test_list_jobs_filters_by_status_and_paginates(client: TestClient, dataset_id: str) -> None:
    first = submit(client, dataset_id, "tiny", epochs=1)
    second = submit(client, dataset_id, "tiny", epochs=1)
    for job in (first, second):
        wait_for_job(client, job["id"])
    client.post(f"/jobs/{submit(client, dataset_id, 'tiny', epochs=200)['id']}/cancel")
    listing = client.get("/jobs", params={"limit": 2}).json()
    assert listing["count"] == 3 and len(listing["jobs"]) == 2 and listing["limit"] == 2
    assert listing["jobs"][1]["id"] == second["id"]  # newest first
    page_two = client.get("/jobs", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in page_two["jobs"]] == [first["id"]]
    succeeded = client.get("/jobs", params={"status": "succeeded"}).json()
    assert succeeded["count"] == 2
    assert client.get("/jobs", params={"status": "cancelled"}).json()["count"] == 1
    assert client.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_queued_job_is_cancelled_at_once_and_never_runs(
    client: TestClient, dataset_id: str
) -> None:
    running = submit(client, dataset_id, "lenet5", epochs=200)
    queued = submit(client, dataset_id, "tiny")
    wait_for_job(client, running["id"], until={"running"})
    assert client.get(f"/jobs/{queued['id']}").json()["queue_position"] == 1
    response = client.post(f"/jobs/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
    client.post(f"/jobs/{running['id']}/cancel")
    time.sleep(0.3)
    job = client.get(f"/jobs/{queued['id']}").json()
    assert job["status"] == "cancelled" and job["started_at"] is None


def test_running_job_is_cancelled_within_a_second_and_publishes_nothing(
    client: TestClient, dataset_id: str, settings: Settings
) -> None:
    job = submit(client, dataset_id, "lenet5", epochs=200)
    wait_for_iteration(client, job["id"], 2)
    started = time.monotonic()
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    while worker_pids() and time.monotonic() - started < 5:
        time.sleep(0.02)
    assert worker_pids() == [] and time.monotonic() - started < 1.5
    time.sleep(0.3)
    assert client.get(f"/jobs/{job['id']}").json()["model_id"] is None
    assert client.get("/models").json()["count"] == 0
    assert list((settings.data_dir / "checkpoints").iterdir()) == []


def test_cancel_a_finished_job_is_409(client: TestClient, dataset_id: str) -> None:
    job = wait_for_job(client, submit(client, dataset_id, "tiny", epochs=1)["id"])
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["detail"] == "Job already finished (status: succeeded)"


def test_divergence_fails_the_job_with_advice_and_no_model(
    client: TestClient, dataset_id: str
) -> None:
    job = submit(client, dataset_id, DIVERGING_ARCHITECTURE, optimizer=SGD_10, epochs=3)
    job = wait_for_job(client, job["id"])
    assert job["status"] == "failed" and job["model_id"] is None
    assert "cost became nan" in job["error"] and "lower learning rate" in job["error"]
    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/costs", "/jobs"):
        strict_json(client.get(path).text)
    assert client.get("/models").json()["count"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"architecture": {**TINY_ARCHITECTURE, "input_shape": [3, 28, 28]}},
            "does not match dataset",
        ),
        (
            {
                "architecture": {
                    **TINY_ARCHITECTURE,
                    "layers": [*TINY_ARCHITECTURE["layers"][:-1], {"type": "dense", "units": 4}],
                }
            },
            "predicts 4 classes",
        ),
        (
            {
                "architecture": {
                    "input_shape": [1, 28, 28],
                    "layers": [
                        {"type": "conv", "filters": 2, "kernel_size": 29},
                        {"type": "dense", "units": 10},
                    ],
                }
            },
            "layer 0 (conv)",
        ),
        ({"architecture": "resnet"}, None),
        ({"training": {"epochs": 0}}, None),
        ({"training": {"batch_size": 100_000}}, None),
        ({"training": {"optimizer": {"name": "adam", "learning_rate": 0}}}, None),
        ({"training": {"optimizer": {"name": "nadam"}}}, None),
        ({"training": {"validation_split": 0.9}}, None),
        ({"training": {"early_stopping": {"patience": 0}}}, None),
    ],
)
def test_jobs_that_cannot_work_are_refused_at_submission(
    client: TestClient, dataset_id: str, change: dict, message: str | None
) -> None:
    body = {"dataset_id": dataset_id, "architecture": TINY_ARCHITECTURE, **change}
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    if message:
        assert message in response.json()["detail"]
    assert client.get("/jobs").json()["count"] == 0


def test_unknown_dataset_is_404(client: TestClient) -> None:
    for dataset_id in ("0" * 32, "../etc"):
        response = client.post("/jobs", json={"dataset_id": dataset_id, "architecture": "lenet5"})
        assert response.status_code == 404


def test_full_queue_is_429_with_retry_after(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, max_queue=1, poll_interval=0.05)
    with TestClient(create_app(settings)) as client:
        running = submit(client, architecture="lenet5", epochs=200)
        wait_for_job(client, running["id"], until={"running"})
        submit(client, architecture="lenet5", epochs=200)
        response = client.post(
            "/jobs", json={"dataset_id": "mnist-sample", "architecture": "lenet5"}
        )
        assert response.status_code == 429 and response.headers["retry-after"]
        assert client.get("/jobs").json()["count"] == 2


def test_unknown_or_malformed_job_ids_are_404(client: TestClient) -> None:
    for job_id in ("0" * 32, "nope", "%2e%2e"):
        for path in ("", "/costs", "/costs.png", "/events"):
            assert client.get(f"/jobs/{job_id}{path}").status_code == 404
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 404


def test_a_job_too_big_for_the_worker_memory_limit_is_refused_at_submission(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, worker_memory_mb=512, poll_interval=0.05)
    wide = {
        "input_shape": [1, 28, 28],
        "layers": [
            {
                "type": "conv",
                "filters": 64,
                "kernel_size": 5,
                "padding": "same",
                "activation": "relu",
            },
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    }
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/jobs",
            json={
                "dataset_id": "mnist-sample",
                "architecture": wide,
                "training": {"batch_size": 256},
            },
        )
        assert response.status_code == 422, response.text
        assert "CNN_WORKER_MEMORY_MB" in response.json()["detail"]
        assert client.get("/jobs").json()["count"] == 0
        small = client.post("/jobs", json={"dataset_id": "mnist-sample", "architecture": "lenet5"})
        assert small.status_code == 202, small.text  # LeNet-5 fits in the same 512 MB
