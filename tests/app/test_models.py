"""GET/DELETE /models, download, and predictions from images or arrays."""

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnn_core import Network
from cnn_core.datasets import images_to_array
from tests.app.hostile import raw_request
from tests.support.builders import holdout, png_bytes

X, Y = holdout()
DIGITS = [(index, png_bytes(X[index])) for index in range(400, 420)]


@pytest.fixture
def model(trained: tuple[TestClient, dict]) -> dict:
    return trained[1]


@pytest.fixture
def client(trained: tuple[TestClient, dict]) -> TestClient:
    return trained[0]


def test_models_are_listed_and_described(client: TestClient, model: dict) -> None:
    listing = client.get("/models").json()
    assert listing["count"] == 1 and listing["models"][0] == model
    assert model["input_shape"] == [1, 28, 28] and model["classes"] == [str(d) for d in range(10)]
    assert model["param_count"] == sum(layer["param_count"] for layer in model["layers"])
    assert model["metrics"]["epochs_trained"] == 3
    assert model["preprocessing"]["image_scale"] == pytest.approx(1 / 255)
    job = client.get(f"/jobs/{model['job_id']}").json()
    assert job["model_id"] == model["id"] and model["training"] == job["training"]


def test_download_is_a_loadable_network(client: TestClient, model: dict, tmp_path) -> None:
    response = client.get(f"/models/{model['id']}/download")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    path = tmp_path / "model.npz"
    path.write_bytes(response.content)
    net = Network.load(path)
    assert net.param_count == model["param_count"] and net.metadata["id"] == model["id"]


def test_predict_png_files_gives_label_class_and_top_k(client: TestClient, model: dict) -> None:
    files = [("files", (f"{i}.png", data)) for i, data in DIGITS]
    response = client.post(f"/models/{model['id']}/predict", files=files, params={"top_k": 3})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == len(DIGITS)
    for prediction in predictions:
        assert prediction["class_name"] == str(prediction["label"])
        assert (
            len(prediction["top_k"]) == 3 and prediction["top_k"][0]["label"] == prediction["label"]
        )
        probabilities = [p["probability"] for p in prediction["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] <= 1
    correct = sum(p["label"] == Y[i] for p, (i, _) in zip(predictions, DIGITS, strict=True))
    assert correct >= 12  # a tiny model after 3 epochs on 270 digits


def test_images_predict_exactly_as_the_same_pixels_sent_as_instances(
    client: TestClient, model: dict
) -> None:
    index, data = DIGITS[0]
    from_png = client.post(f"/models/{model['id']}/predict", files={"files": ("d.png", data)})
    instances = images_to_array([Image.fromarray(X[index])], [1, 28, 28], model["preprocessing"])[
        0
    ].tolist()
    from_json = client.post(f"/models/{model['id']}/predict", json={"instances": [instances]})
    assert from_json.status_code == 200
    (png,), (json,) = from_png.json()["predictions"], from_json.json()["predictions"]
    assert (png.pop("filename"), json.pop("filename")) == ("d.png", None)
    assert png == json


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("L", "JPEG"),
        ("RGB", "JPEG"),
        ("I;16", "PNG"),
    ],
)
def test_image_modes_and_formats_are_converted(
    client: TestClient, model: dict, mode: str, fmt: str
) -> None:
    image = Image.fromarray(X[0]).resize((56, 56))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    response = client.post(
        f"/models/{model['id']}/predict", files={"files": (f"x.{fmt.lower()}", buffer.getvalue())}
    )
    assert response.status_code == 200, response.text


def test_top_k_is_clamped_to_the_class_count(client: TestClient, model: dict) -> None:
    response = client.post(
        f"/models/{model['id']}/predict",
        params={"top_k": 50},
        files={"files": ("d.png", DIGITS[0][1])},
    )
    [prediction] = response.json()["predictions"]
    assert len(prediction["top_k"]) == 10
    assert sum(p["probability"] for p in prediction["top_k"]) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (png_bytes(X[0], fmt="GIF"), 415),
        (png_bytes(X[0], fmt="BMP"), 415),
        (b"not an image", 415),
        (DIGITS[0][1][:60], 400),
    ],
)
def test_bad_images_are_refused(
    client: TestClient, model: dict, payload: bytes, status: int
) -> None:
    response = client.post(f"/models/{model['id']}/predict", files={"files": ("x.png", payload)})
    assert response.status_code == status
    assert response.json()["detail"].startswith("x.png: ")


def test_an_image_over_the_pixel_cap_is_413(client: TestClient, model: dict) -> None:
    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, format="PNG")
    response = client.post(
        f"/models/{model['id']}/predict", files={"files": ("big.png", buffer.getvalue())}
    )
    assert response.status_code == 413


def test_instances_of_the_wrong_shape_or_values_are_422(client: TestClient, model: dict) -> None:
    url = f"/models/{model['id']}/predict"
    assert client.post(url, json={"instances": [[[[0.0] * 5] * 5]]}).status_code == 422
    assert (
        client.post(url, json={"instances": [[[[0.0] * 28] * 28], [[[0.0] * 3]]]}).status_code
        == 422
    )
    assert client.post(url, json={"instances": []}).status_code == 422
    response = client.post(
        url, content=b'{"instances": [[[[NaN]]]]}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "NaN" not in response.text


def test_predict_needs_files_or_json(client: TestClient, model: dict) -> None:
    url = f"/models/{model['id']}/predict"
    assert client.post(url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post(url, files={"other": ("d.png", DIGITS[0][1])}).status_code == 422


def test_a_busy_predictor_refuses_before_reading_the_body(
    client: TestClient, model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = client.app.state.predictor
    monkeypatch.setattr(predictor, "_in_flight", predictor._concurrency)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="d.png"\r\n\r\n'
        + DIGITS[0][1]
        + b"\r\n--b--\r\n"
    )
    status, _, reads = raw_request(
        client.app,
        "POST",
        f"/models/{model['id']}/predict",
        {"Content-Type": "multipart/form-data; boundary=b"},
        body,
    )
    assert (status, reads) == (503, 0)


def test_unknown_model_is_404_everywhere(client: TestClient) -> None:
    for model_id in ("0" * 32, "nope"):
        assert client.get(f"/models/{model_id}").status_code == 404
        assert client.get(f"/models/{model_id}/download").status_code == 404
        assert client.delete(f"/models/{model_id}").status_code == 404
        response = client.post(
            f"/models/{model_id}/predict", files={"files": ("d.png", DIGITS[0][1])}
        )
        assert response.status_code == 404


def test_delete_model_last(client: TestClient, model: dict) -> None:
    assert client.delete(f"/models/{model['id']}").status_code == 204
    assert client.get(f"/models/{model['id']}").status_code == 404
    response = client.post(
        f"/models/{model['id']}/predict", files={"files": ("d.png", DIGITS[0][1])}
    )
    assert response.status_code == 404
    assert client.get("/models").json()["count"] == 0
