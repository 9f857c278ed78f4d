"""GET /metrics: Prometheus text, behind the API key, with request, prediction and job figures
(event streams counted, not timed; the training pace of the running jobs)."""

import time

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.metrics import JobsCollector
from app.settings import Settings
from app.storage.jobs import IterationCost, JobStatus, JobStore
from tests.app.conftest import STORE_TRAINING, add_job
from tests.support.builders import holdout, png_bytes


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_predictions_and_jobs(trained: tuple[TestClient, dict]) -> None:
    client, model = trained
    before = samples(client.get("/metrics").text)
    X, _ = holdout()
    assert (
        client.post(
            f"/models/{model['id']}/predict", files={"files": ("d.png", png_bytes(X[0]))}
        ).status_code
        == 200
    )
    assert client.get("/jobs/nope").status_code == 404
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    route = ("route", "/models/{model_id}/predict")
    key = ("cnn_http_requests_total", (("method", "POST"), route, ("status", "200")))
    assert after[key] == before.get(key, 0) + 1
    assert (
        after[
            (
                "cnn_http_requests_total",
                (("method", "GET"), ("route", "/jobs/{job_id}"), ("status", "404")),
            )
        ]
        >= 1
    )
    count = ("cnn_prediction_duration_seconds_count", ())
    assert after[count] == before[count] + 1
    assert after[("cnn_jobs", (("status", "succeeded"),))] == 1
    assert after[("cnn_queue_length", ())] == 0 and after[("cnn_running_jobs", ())] == 0
    assert after[("cnn_live_workers", ())] == 1


def test_metrics_need_the_api_key_when_one_is_set(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_key="sesame")
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        response = client.get("/metrics", headers={"Authorization": "Bearer sesame"})
        assert response.status_code == 200 and "cnn_queue_length" in response.text


def test_event_streams_are_counted_but_left_out_of_latency(
    trained: tuple[TestClient, dict],
) -> None:
    client, model = trained
    route = "/jobs/{job_id}/events"
    before = samples(client.get("/metrics").text)
    response = client.get(f"/jobs/{model['job_id']}/events")  # an ended job: the stream ends
    assert response.status_code == 200 and "event: end" in response.text
    after = samples(client.get("/metrics").text)
    key = ("cnn_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
    assert after[key] == before.get(key, 0) + 1
    timed = {labels for name, labels in after if name == "cnn_http_request_duration_seconds_count"}
    assert (("method", "GET"), ("route", "/metrics")) in timed
    assert not any(("route", route) in labels for labels in timed)


def test_training_images_per_second_is_the_running_jobs_pace(jobs: JobStore) -> None:
    idle = add_job(jobs)  # queued: no pace
    running = add_job(jobs)
    jobs.claim_next()  # `idle`, claimed but not started: no pace either
    assert jobs.claim_next() == running
    started = time.time()
    jobs.start_run(running, epoch=1, iteration=1, iterations_per_epoch=100)
    jobs.record_iterations(running, [IterationCost(1, i, 1.0) for i in range(1, 11)])
    time.sleep(0.2)
    collector = JobsCollector(jobs, lambda: 1)
    registry = CollectorRegistry()
    registry.register(collector)
    pace = samples(generate_latest(registry).decode())[("cnn_training_images_per_second", ())]
    elapsed = time.time() - started
    images = 10 * STORE_TRAINING["batch_size"]
    assert images / elapsed <= pace <= images / 0.2
    assert jobs.get(idle).status is JobStatus.running
