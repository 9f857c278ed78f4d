"""GET /metrics: Prometheus text, behind the API key, with request, prediction and job figures."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
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
