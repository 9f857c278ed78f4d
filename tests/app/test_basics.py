"""Health, architecture checks, a NaN in a body, and the OpenAPI document."""

from fastapi.testclient import TestClient

from app.schemas import LENET5_CONFIG


def test_health_reports_version_and_workers(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body == {
        "status": "ok",
        "version": "0.1.0",
        "jobs": {"executor": "local", "workers": 1, "running": 0, "queued": 0, "live_workers": []},
        "problems": [],
    }


def test_validate_lenet5_gives_the_classic_parameter_count(client: TestClient) -> None:
    response = client.post("/architectures/validate", json={"architecture": LENET5_CONFIG})
    assert response.status_code == 200
    body = response.json()
    assert body["param_count"] == 61_706
    assert body["n_classes"] == 10
    assert [layer["output_shape"] for layer in body["layers"]] == [
        [6, 28, 28],
        [6, 14, 14],
        [16, 10, 10],
        [16, 5, 5],
        [120],
        [84],
        [10],
    ]
    assert body["macs"] == sum(layer["macs"] for layer in body["layers"])


def test_validate_names_the_layer_that_breaks(client: TestClient) -> None:
    config = {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv", "filters": 2, "kernel_size": 5},
            {"type": "maxpool", "pool_size": 2},
            {"type": "conv", "filters": 2, "kernel_size": 5},
            {"type": "dense", "units": 10},
        ],
    }
    response = client.post("/architectures/validate", json={"architecture": config})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("layer 2 (conv)")


def test_validate_takes_every_activation_of_the_core(client: TestClient) -> None:
    for name in ("relu", "leaky_relu", "sigmoid", "tanh", "linear"):
        config = {
            "input_shape": [1, 8, 8],
            "layers": [
                {"type": "conv", "filters": 2, "kernel_size": 3, "activation": name},
                {"type": "dense", "units": 4, "activation": name},
                {"type": "dense", "units": 3},
            ],
        }
        response = client.post("/architectures/validate", json={"architecture": config})
        assert response.status_code == 200, (name, response.text)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ConvLayer"]
    assert "leaky_relu" in str(schema["properties"]["activation"])


def test_validate_refuses_unknown_layer_types_and_fields(client: TestClient) -> None:
    for layer in (
        {"type": "__import__('os').system"},
        {"type": "conv", "filters": 2, "kernel_size": 3, "activation": "os.system"},
        {"type": "dense", "units": 10, "bias": False},
    ):
        config = {"input_shape": [1, 8, 8], "layers": [layer]}
        response = client.post("/architectures/validate", json={"architecture": config})
        assert response.status_code == 422, layer


def test_nan_in_a_body_is_a_422_that_does_not_echo_it(client: TestClient) -> None:
    body = (
        '{"dataset_id": "mnist-sample", "architecture": "lenet5",'
        ' "training": {"optimizer": {"name": "adam", "learning_rate": NaN}}}'
    )
    response = client.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "NaN" not in response.text and "nan" not in response.text
    assert response.json()["errors"][0]["loc"][-1] == "learning_rate"
    assert client.get("/jobs").json()["count"] == 0


def test_openapi_declares_error_statuses_and_a_working_job_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    cancel = spec["paths"]["/jobs/{job_id}/cancel"]["post"]["responses"]
    assert {"404", "409"} <= set(cancel)
    predict = spec["paths"]["/models/{model_id}/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    example = spec["components"]["schemas"]["JobCreate"]["examples"][0]
    assert example["dataset_id"] == "mnist-sample" and example["architecture"] == "lenet5"


def test_malformed_json_is_a_400_that_says_so(client: TestClient) -> None:
    cut_short = b'{"dataset_id": "mnist-sample",'
    response = client.post("/jobs", content=cut_short, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the body is not valid JSON")
